"""I-JEPA: what each piece may see (predictor, context encoder), the multi-block masks, the
official schedules (LR from ``start_lr``, cosine weight decay, linear EMA momentum), the fixed
position embedding against the official numpy code, bf16, and exact resume through the CLI.

I-JEPA's own loss has no cross-process piece: it is a mean over the local batch's target
patches, equally many per sample (one block size per batch), so DDP's gradient average is the
global batch's gradient. The optional C-JEPA regulariser (``variance_weight``,
``covariance_weight``) is global: its gather is proven against one process in
tests/losses/test_losses_ddp.py (``variance_covariance``); here, that the method adds it to the
official loss and nothing else. A whole-method 2-process test cannot compare against one process:
the masks are drawn per process from a generator seeded by (seed, rank, batch number), as MAE's.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lightning_ssl.callbacks import EMA
from lightning_ssl.data.masking import multiblock_masks
from lightning_ssl.losses import variance_covariance
from lightning_ssl.methods import IJEPA
from lightning_ssl.methods.ijepa import OFFICIAL_VIT
from lightning_ssl.nn.ijepa import IJEPAPredictor, context_tokens, sincos_patch_embedding
from tests.methods.helpers import SyntheticViews, quick_trainer
from tests.resume_runs import STEPS, assert_bitwise_equal, fit_and_state

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "ijepa" / "cifar10.yaml"
VIT = dict(patch_size=4, depth=2, embed_dim=32, num_heads=2, **OFFICIAL_VIT)
TINY = dict(
    backbone="vit_tiny_patch16_224",
    backbone_kwargs=VIT,
    predictor_dim=16,
    predictor_depth=2,
    min_keep=4,
    image_size=32,
)


def _official_sincos(dim: int, size: int) -> np.ndarray:
    """facebookresearch/ijepa ``get_2d_sincos_pos_embed(dim, size, cls_token=False)``."""

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float)))
    grid = grid.reshape(2, 1, size, size)
    return np.concatenate([one_axis(dim // 2, grid[0]), one_axis(dim // 2, grid[1])], axis=1)


def test_position_embedding_is_the_official_one():
    ours = sincos_patch_embedding((6, 6), 32)[0].double().numpy()
    np.testing.assert_allclose(ours, _official_sincos(32, 6), atol=1e-6)


def test_each_target_block_sees_the_context_and_only_its_own_mask_tokens():
    """A block's predictions change with the context tokens and with its own positions, never
    with another block's positions; every context token reaches every block (gradient)."""
    torch.manual_seed(0)
    predictor = IJEPAPredictor(24, dim=16, depth=2, num_heads=2).double()
    tokens = torch.randn(2, 5, 24, dtype=torch.float64, requires_grad=True)
    context = torch.tensor([[0, 1, 2, 8, 9], [3, 4, 5, 11, 12]])
    targets = torch.tensor([[[20, 21, 28, 29], [40, 41, 48, 49]]] * 2)
    pred = predictor(tokens, context, targets, (8, 8))
    moved = targets.clone()
    moved[:, 1] += 2  # block 1 elsewhere: block 0's predictions are untouched
    again = predictor(tokens, context, moved, (8, 8))
    torch.testing.assert_close(again[:, 0], pred[:, 0], rtol=0, atol=0)
    assert not torch.allclose(again[:, 1], pred[:, 1])
    (grad,) = torch.autograd.grad(pred[0, 0].sum(), tokens)
    assert (grad[0].abs().sum(-1) > 0).all() and grad[1].abs().sum() == 0  # its own sample's


def test_the_context_encoder_sees_only_context_patches():
    """Pixels outside each image's context block change the targets, never the predictions."""
    model = IJEPA(**TINY).double()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    context, _ = model.draw_masks(3, (8, 8), torch.Generator().manual_seed(3))
    seen = torch.zeros(3, 64, dtype=torch.bool).scatter_(1, context, True)
    outside = (~seen).view(3, 1, 8, 1, 8, 1).expand(3, 3, 8, 4, 8, 4).reshape(3, 3, 32, 32)
    _, pred, features, _ = model.predict_targets(images, torch.Generator().manual_seed(3))
    _, pred2, features2, _ = model.predict_targets(
        images + 3 * outside, torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(pred2, pred, rtol=0, atol=1e-12)
    assert not torch.allclose(features2, features)


def test_multiblock_masks_are_disjoint_seeded_and_keep_min_keep():
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    masks = multiblock_masks(64, (8, 8), g(), min_keep=4)
    again = multiblock_masks(64, (8, 8), g(), min_keep=4)
    assert torch.equal(masks.context, again.context) and torch.equal(masks.targets, again.targets)
    assert not (masks.context & masks.targets.any(1)).any()
    assert (masks.context.sum(1) > 4).all()
    assert len({tuple(t.flatten().tolist()) for t in masks.targets}) > 32  # per sample
    # corners from randint(0, H - h): no block reaches the last row or column (official)
    grid = torch.cat([masks.context[:, None], masks.targets], 1).view(64, 5, 8, 8)
    assert not grid[..., -1, :].any() and not grid[..., :, -1].any()
    # a floor no disjoint context can reach: the targets' exclusion is relaxed, as official
    relaxed = multiblock_masks(16, (8, 8), g(), min_keep=40)
    assert (relaxed.context.sum(1) > 40).all()


def _record(lrs: list, wds: list) -> L.Callback:
    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            group = next(g for g in optimizer.param_groups if not g["name"].endswith("no_decay"))
            lrs.append(group["lr"])
            wds.append(group["weight_decay"])

    return Record()


def test_schedules_are_the_official_ones():
    """Per optimizer step k of K: LR warm-up from 0.2 x the peak, then cosine to 0.001 x the
    peak, stepped before the update (official ``WarmupCosineSchedule``); weight decay
    ``0.4 + (0.04 - 0.4)(1 + cos(pi (k + 1) / K)) / 2`` on the decayed groups
    (``CosineWDSchedule``); EMA momentum ``0.996 + 0.004 k / K`` (``momentum_scheduler``)."""
    data = SyntheticViews(image_size=32, batch_size=4, n=16, num_global_crops=1)
    model = IJEPA(**{**TINY, **data.link()}, lr=0.01, warmup_epochs=0.5)  # 2 warm-up steps of 4
    lrs: list[float] = []
    wds: list[float] = []
    trainer = quick_trainer(
        max_steps=-1, max_epochs=1, limit_val_batches=0, callbacks=[_record(lrs, wds)]
    )
    trainer.fit(model, datamodule=data)
    peak, total = 0.01, 4
    cosine = [0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * p)) for p in (0.0, 0.5, 1.0)]
    assert lrs == pytest.approx([peak * f for f in (0.6, *cosine)], rel=1e-9)
    expected_wd = [0.4 - 0.36 * 0.5 * (1 + math.cos(math.pi * (k + 1) / total)) for k in range(4)]
    assert wds == pytest.approx(expected_wd, rel=1e-9)
    ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
    assert [ema.tau(k) for k in range(5)] == pytest.approx([0.996, 0.997, 0.998, 0.999, 1.0])


def test_bf16_step_is_finite_and_loss_is_float32():
    model = IJEPA(**TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, *_ = model.predict_targets(torch.randn(4, 3, 32, 32), torch.Generator())
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert not any(p.grad is not None for p in model.teacher.parameters())


def test_the_c_jepa_regulariser_adds_vicregs_terms_of_the_context_averaged_per_image():
    images = torch.randn(6, 3, 32, 32)
    losses = {}
    for weights in ((0.0, 0.0), (2.0, 0.5)):
        torch.manual_seed(0)  # the same initial weights for both
        model = IJEPA(**TINY, variance_weight=weights[0], covariance_weight=weights[1])
        losses[weights], *_ = model.predict_targets(images, torch.Generator().manual_seed(1))
    context_ids, _ = model.draw_masks(6, (8, 8), torch.Generator().manual_seed(1))
    context = context_tokens(model.backbone.model, images, context_ids)  # (B, K, D)
    variance, covariance = variance_covariance(context.mean(1))
    expected = losses[0.0, 0.0] + 2.0 * variance + 0.5 * covariance
    torch.testing.assert_close(losses[2.0, 0.5], expected)
    assert variance > 0.5  # a random ViT's averaged tokens vary little across images


def test_a_vit_without_averaged_normed_tokens_is_refused_with_the_fix_named():
    with pytest.raises(ValueError, match="global_pool: avg and fc_norm: false"):
        IJEPA(**{**TINY, "backbone_kwargs": {"patch_size": 4, "depth": 1}})


def test_a_predictor_width_its_heads_do_not_divide_is_refused_with_the_fix_named():
    # the encoder's 2 heads by default (timm's own error named neither argument)
    with pytest.raises(ValueError, match=r"predictor_dim=17 .* its 2 .*=16 or 18"):
        IJEPA(**{**TINY, "predictor_dim": 17})
    with pytest.raises(ValueError, match=r"predictor_dim=16 .* 3 attention heads"):
        IJEPA(**{**TINY, "predictor_dim": 16, "predictor_num_heads": 3})


#: The shipped config with a tiny encoder and predictor (``cli_args`` options).
TINY_RUN = dict(
    config=CONFIG,
    backbone_args=(f"--model.init_args.backbone_kwargs={VIT}",),
    model_args=("--model.init_args.predictor_dim=16", "--model.init_args.predictor_depth=1"),
    val_subset=64,
)
WARMUP = "--model.init_args.warmup_epochs=1"


def test_resume_mid_epoch_repeats_masks_and_ema_bitwise(cifar10_dir, tmp_path):
    """Resumed at step 4 (mid-epoch, 2 loader workers), the run ends with the uninterrupted
    run's context and target encoders, predictor, optimizer (with its scheduled weight decay)
    and probe bit for bit: masks, LR, weight decay and EMA momentum are functions of the step."""
    expected = fit_and_state(cifar10_dir, tmp_path / "straight", WARMUP, **TINY_RUN)
    folder = tmp_path / "straight" / "checkpoints"
    resumed = tmp_path / "resumed"
    got = fit_and_state(cifar10_dir, resumed, WARMUP, ckpt=folder / "step=4.ckpt", **TINY_RUN)
    assert expected["global_step"] == STEPS == 12
    student, teacher = expected["model"], {
        k.removeprefix("teacher."): v for k, v in expected["model"].items() if "teacher." in k
    }
    assert not torch.equal(student["backbone.model.blocks.0.attn.qkv.weight"],
                           teacher["model.blocks.0.attn.qkv.weight"])  # fmt: skip
    assert_bitwise_equal(got, expected, "I-JEPA resumed at step 4")
