"""iBOT: mask tokens really replace the masked patches, per-image masking ratios, the heads
the EMA averages, a bf16 step with every option, and exact resume of masks, EMA and both
centers through the CLI with the shipped CIFAR-10 config.

The cross-process pieces (Sinkhorn-Knopp over the global batch, the patch center) are tested
in tests/losses/test_ibot_ddp.py; the class-token loss and center are DINO's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from lightning_ssl.methods import IBOT
from lightning_ssl.nn.masked_vit import encode_tokens
from tests.methods.helpers import SyntheticViews, quick_trainer
from tests.resume_runs import assert_bitwise_equal, fit_and_state, trained_state

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "ibot" / "cifar10.yaml"
TINY_VIT = dict(patch_size=4, depth=2, embed_dim=64, num_heads=2)
HEADS = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)


def _hidden_pixels(mask: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """``(B, 1, H, W)`` booleans: the pixels of the masked patches."""
    b = mask.shape[0]
    cells = mask.view(b, 1, *grid).float()
    return torch.nn.functional.interpolate(cells, scale_factor=patch).bool()


@pytest.mark.parametrize("size", [32, 48])  # 48: another crop size, interpolated positions
def test_masked_patches_never_reach_the_encoder(size):
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, num_classes=0, dynamic_img_size=True, **TINY_VIT
    ).eval()
    grid = (size // 4, size // 4)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, size, size, generator=g)
    mask = torch.rand(3, grid[0] * grid[1], generator=g) < 0.4
    token = torch.randn(1, 1, 64, generator=g)
    tokens = encode_tokens(vit, images, mask, token)
    # Any change of the masked pixels leaves every output token (masked or not) unchanged ...
    hidden = _hidden_pixels(mask, grid, 4)
    changed = images + 10 * hidden * torch.randn(images.shape, generator=g)
    torch.testing.assert_close(encode_tokens(vit, changed, mask, token), tokens)
    # ... while a visible pixel, or the mask token, changes them.
    visible = images + 10 * (~hidden) * torch.randn(images.shape, generator=g)
    assert not torch.allclose(encode_tokens(vit, visible, mask, token), tokens)
    assert not torch.allclose(encode_tokens(vit, images, mask, token + 1), tokens)
    # Without a mask: timm's own forward (class token after the final norm).
    torch.testing.assert_close(vit.forward_head(encode_tokens(vit, images)), vit(images))


def test_masks_draw_a_ratio_per_image_and_repeat_with_the_seed():
    ibot = IBOT(
        backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_VIT, image_size=32, **HEADS,
        pred_ratio=(0.0, 0.3), pred_ratio_var=(0.0, 0.2),
    )  # fmt: skip
    masks = ibot.draw_masks(400, (14, 14), torch.Generator().manual_seed(1))
    counts = masks.sum(1)
    unmasked = counts == 0
    assert 0.4 < unmasked.float().mean() < 0.6  # half the images pick ratio 0
    # the others: int(r * 196) patches, r uniform in [0.1, 0.5] (BEiT's rule stops short rarely)
    assert counts.max() <= int(0.5 * 196) and counts[~unmasked].min() >= int(0.1 * 196) - 16
    assert counts[~unmasked].float().std() > 10  # one ratio per image, not per batch
    again = ibot.draw_masks(400, (14, 14), torch.Generator().manual_seed(1))
    assert torch.equal(masks, again)
    with pytest.raises(ValueError, match="pred_ratio"):
        IBOT(backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_VIT, image_size=32,
             pred_ratio=(0.1,), pred_ratio_var=(0.2,))  # fmt: skip
    with pytest.raises(ValueError, match="shared_head: false"):
        IBOT(backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_VIT, image_size=32,
             patch_out_dim=32, **HEADS)  # fmt: skip


def test_separate_patch_head_is_averaged_by_the_ema_and_the_mask_token_is_not():
    ibot = IBOT(
        backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_VIT, image_size=32, **HEADS,
        shared_head=False, patch_out_dim=48,
    )  # fmt: skip
    student = ibot.ema_student()
    assert list(student) == list(ibot.teacher) == ["backbone", "head", "patch_head"]
    assert ibot.teacher["patch_head"].last_layer.weight.shape == (48, 16)
    assert "mask_token" not in dict(ibot.teacher.named_parameters())
    assert ibot.patch_heads()[0] is ibot.patch_head


def test_bf16_steps_with_every_option_are_finite():
    """Separate head, DINOv2's Sinkhorn-Knopp teacher and KoLeo, local crops, bf16 autocast."""
    data = SyntheticViews(image_size=32, batch_size=4, n=8, num_local_crops=2, local_size=16)
    ibot = IBOT(
        backbone="vit_tiny_patch16_224", backbone_kwargs=TINY_VIT, **HEADS, shared_head=False,
        centering="sinkhorn", koleo_weight=0.1, pred_ratio=(0.5,), **data.link(),
    )  # fmt: skip
    trainer = quick_trainer(max_steps=2, precision="bf16-mixed", limit_val_batches=0)
    trainer.fit(ibot, datamodule=data)
    metrics = trainer.callback_metrics
    for name in ("loss", "cls_loss", "patch_loss", "koleo", "teacher_entropy"):
        assert torch.isfinite(metrics[f"train/{name}"]), name
    assert metrics["train/patch_loss"] > 0 and metrics["train/masked_fraction"] > 0.3
    assert torch.equal(ibot.patch_center, torch.zeros_like(ibot.patch_center))  # Sinkhorn
    assert all(torch.isfinite(p).all() for p in ibot.parameters())
    # the student's masked pass is the only path to the mask token: it learned
    assert ibot.mask_token.abs().sum() > 0


#: The shipped config for one epoch (6 steps) with a tiny ViT (stochastic depth on, as shipped)
#: and heads (``cli_args`` options).
TINY_RUN = dict(
    config=CONFIG,
    backbone_args=(
        "--model.init_args.backbone_kwargs={patch_size: 4, depth: 2, embed_dim: 64, "
        "num_heads: 2, drop_path_rate: 0.1}",
    ),
    model_args=(
        *(f"--model.init_args.{k}={v}" for k, v in HEADS.items()),
        "--model.init_args.teacher_temp_warmup_epochs=1",
    ),
    epochs=1,
)


def test_resume_mid_epoch_repeats_masks_ema_and_centers_bitwise(cifar10_dir, tmp_path):
    """The shipped config (2 loader workers) resumed at step 2 of 6, mid-epoch, ends with the
    uninterrupted run's student, teacher, mask token, both centers, optimizer and probe bit for
    bit: masks come from a generator seeded by (seed, rank, batch number).

    Stochastic depth is on, as in the shipped configs: timm's ``DropPath`` draws from the global
    generators, which no checkpoint holds; ``SSLMethod`` seeds them per batch (without that, the
    resumed run differed by 1e-5 on the mask token).
    """
    expected = fit_and_state(cifar10_dir, tmp_path / "straight", **TINY_RUN)
    folder = tmp_path / "straight" / "checkpoints"
    got = fit_and_state(cifar10_dir, tmp_path / "resumed", ckpt=folder / "step=2.ckpt", **TINY_RUN)
    assert expected["global_step"] == 6
    start = trained_state(folder / "step=2.ckpt")["model"]
    for key in ("center", "patch_center", "mask_token", "teacher.head.mlp.0.weight"):
        assert not torch.equal(start[key], expected["model"][key]), f"{key} did not train"
    assert_bitwise_equal(got, expected, "iBOT resumed at step 2")
