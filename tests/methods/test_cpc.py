"""CPC v2: patch grids and per-patch augmentation, the context network's causality, layer norm
(no batch statistics), 2 processes like 1, exact resume and export through the CLI."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from lightning_ssl.data.patches import (
    PatchAugmentation,
    PatchGrid,
    augment_patches,
    extract_patches,
)
from lightning_ssl.export import export_backbone
from lightning_ssl.methods import CPC
from lightning_ssl.nn.cpc import ContextNetwork, orient
from tests.ddp_utils import fit_and_record, lightning_env, run_distributed
from tests.resume_runs import REPO, STEPS, assert_bitwise_equal, fit_and_state

CONFIG = REPO / "configs" / "cpc" / "cifar10.yaml"
TINY = dict(
    backbone="timm:test_resnet",
    image_size=32,
    num_global_crops=1,
    context_hidden_dim=16,
    context_blocks=2,
    num_classes=4,
)


def test_grid_of_overlapping_patches():
    assert PatchGrid.for_image(32) == PatchGrid(8, 4, 7)
    assert PatchGrid.for_image(256) == PatchGrid(64, 32, 7)  # CPC's ImageNet grid
    assert PatchGrid.for_image(32, 16, 8) == PatchGrid(16, 8, 3)
    with pytest.raises(ValueError, match="do not tile 30 px"):
        PatchGrid.for_image(30)
    images = torch.randn(2, 3, 32, 32)
    patches = extract_patches(images, PatchGrid.for_image(32))
    assert patches.shape == (2, 7, 7, 3, 8, 8)
    for i, j in [(0, 0), (3, 5), (6, 6)]:
        window = images[:, :, 4 * i : 4 * i + 8, 4 * j : 4 * j + 8]
        assert torch.equal(patches[:, i, j], window)
    # neighbours share half a patch, across and down
    assert torch.equal(patches[:, 2, 3, ..., 4:], patches[:, 2, 4, ..., :4])
    assert torch.equal(patches[:, 2, 3, :, 4:], patches[:, 3, 3, :, :4])


def _source_window(image: torch.Tensor, patch: torch.Tensor, top: int, left: int, jitter: int):
    """``(dy, dx, flipped)`` of the window (shifted up to ``jitter``, flipped or not) whose kept
    channel equals the patch's, or None."""
    kept = int(patch.abs().sum(dim=(1, 2)).argmax())
    for dy in range(-jitter, jitter + 1):
        for dx in range(-jitter, jitter + 1):
            y, x = min(max(top + dy, 0), 32 - 8), min(max(left + dx, 0), 32 - 8)
            window = image[kept, y : y + 8, x : x + 8]
            for flipped in (False, True):
                if torch.equal(patch[kept], window.flip(-1) if flipped else window):
                    return y - top, x - left, flipped
    return None


def test_patch_augmentation_shifts_flips_and_drops_colour_per_patch():
    grid = PatchGrid.for_image(32)
    images = torch.rand(2, 3, 32, 32) + 1.0  # no pixel is 0 before dropping
    plain = PatchAugmentation(jitter=0, flip_prob=0.0, colour_drop_prob=0.0)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_patches(images, grid, plain, g), extract_patches(images, grid))
    strong = PatchAugmentation(jitter=2, flip_prob=0.5, colour_drop_prob=1.0)
    out = augment_patches(images, grid, strong, torch.Generator().manual_seed(3))
    again = augment_patches(images, grid, strong, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)  # a function of the generator's state
    assert out.shape == (2, 7, 7, 3, 8, 8)
    zero_channels = (out == 0).flatten(-2).all(-1).sum(-1)  # (B, G, G)
    assert torch.equal(zero_channels, torch.full_like(zero_channels, 2))  # one channel kept
    sources = [
        _source_window(images[b], out[b, i, j], 4 * i, 4 * j, 2)
        for b in range(2)
        for i in range(7)
        for j in range(7)
    ]
    assert all(s is not None for s in sources)  # every patch is a shifted (flipped) window
    assert any(s[2] for s in sources) and not all(s[2] for s in sources)
    assert any(s[:2] != (0, 0) for s in sources)
    kept = out.abs().sum(dim=(-2, -1)).argmax(dim=-1)  # (B, G, G): the kept channel
    assert set(kept.flatten().tolist()) == {0, 1, 2}  # drawn per patch


def test_context_row_sees_only_rows_at_or_above_it():
    """The gradient of context row i with respect to the patch vectors of rows > i is exactly
    zero, and non-zero for row i itself, for every row and for the turned grids."""
    torch.manual_seed(0)
    net = ContextNetwork(dim=4, hidden_dim=8, num_blocks=3)
    z = torch.randn(2, 7, 5, 4, requires_grad=True)
    for i in range(7):
        (grad,) = torch.autograd.grad(net(z)[:, i].sum(), z)
        assert torch.all(grad[:, i + 1 :] == 0), i
        assert grad[:, i].abs().sum() > 0, i
    model = CPC(**TINY)
    grid = torch.randn(2, 7, 7, model.backbone.dim, requires_grad=True)
    (grad,) = torch.autograd.grad(model.context["up"](orient(grid, "up"))[:, 2].sum(), grid)
    assert torch.all(grad[:, :4] == 0) and grad[:, 4].abs().sum() > 0  # row 2 from below: 4


def test_turned_grids():
    grid = torch.arange(2 * 3 * 3 * 1.0).view(2, 3, 3, 1)
    assert torch.equal(orient(grid, "down"), grid)
    assert torch.equal(orient(grid, "up")[:, 0], grid[:, 2])
    assert torch.equal(orient(grid, "right")[:, 0], grid[:, :, 0])
    assert torch.equal(orient(grid, "left")[:, 0], grid[:, :, 2])


def test_layer_norm_backbone_has_no_batch_statistics():
    """A patch's vector does not depend on the other patches of the batch (paper sec. 4.1)."""
    model = CPC(**TINY).train()
    assert model.hparams.backbone_kwargs == {"norm": "layer"}
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    patches = torch.randn(6, 3, 8, 8)
    torch.testing.assert_close(model.backbone(patches)[:1], model.backbone(patches[:1]))


def test_refuses_bad_values_with_the_fix_named():
    with pytest.raises(ValueError, match="augmentation: cpc"):
        CPC(**{**TINY, "num_global_crops": 2})
    with pytest.raises(ValueError, match="prediction_steps=7"):
        CPC(**TINY, prediction_steps=7)
    with pytest.raises(ValueError, match="directions"):
        CPC(**TINY, directions=("down", "down"))


B, STEPS_DDP = 4, 3
PLAIN = dict(patch_jitter=0, patch_flip_prob=0.0, colour_drop_prob=0.0)


class _Views(Dataset):
    """``STEPS_DDP`` global batches of 2B images with one fixed view; ``rank`` takes its half."""

    def __init__(self, rank: int | None) -> None:
        self.images = torch.randn(STEPS_DDP * 2 * B, 3, 32, 32, generator=torch.Generator())
        index = torch.arange(STEPS_DDP * 2 * B).view(STEPS_DDP, 2, B)  # step, rank, sample
        self.index = index.flatten() if rank is None else index[:, rank].flatten()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = int(self.index[i])
        return [self.images[j]], j % 4


def _train(rank: int | None, world_size: int) -> dict:
    torch.manual_seed(0)
    model = CPC(**TINY, **PLAIN, optimizer="sgd", lr=0.05, warmup_epochs=0.0)
    batch = 2 * B if rank is None else B
    torch.manual_seed(1)  # the same images in every process
    loader = DataLoader(_Views(rank), batch_size=batch)
    return fit_and_record(model, loader, world_size, max_steps=STEPS_DDP, precision="64-true")


def _worker(rank: int, world_size: int) -> dict:
    lightning_env(rank, world_size)
    return _train(rank, world_size)


def test_two_processes_train_like_one_with_the_union_batch():
    """Negatives are the patches of both processes (gathered with gradients): the mean of the
    ranks' losses, the first gradients (as DDP averages them) and the weights after 3 SGD steps
    equal one process's with the union batch, in float64 (as tests/test_ddp_equivalence.py;
    only the order of sums differs, ~1e-15 relative, asked at 1e-9)."""
    ranks = run_distributed(_worker, 2)
    torch.set_num_threads(1)
    single = _train(None, 1)
    for step in range(STEPS_DDP):
        mean = sum(r["losses"][step] for r in ranks) / 2
        assert mean == pytest.approx(single["losses"][step], rel=1e-9)
    assert single["grads"]
    for key, value in single["grads"].items():
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][key], value, rtol=1e-9, atol=1e-12)
    for key, value in single["state"].items():
        for rank in ranks:
            torch.testing.assert_close(rank["state"][key], value, rtol=1e-9, atol=1e-12)


#: The shipped config with a narrow context network (``cli_args`` options; timm's test_resnet).
TINY_RUN = dict(config=CONFIG, model_args=("--model.init_args.context_hidden_dim=32",))
WARMUP = "--model.init_args.warmup_epochs=1"


@pytest.mark.usefixtures("one_thread")
def test_resume_mid_epoch_repeats_the_patch_augmentation_bitwise(cifar10_dir, tmp_path):
    """Patch draws come from a generator seeded by (seed, rank, batch number): the run resumed
    at step 4 (mid-epoch, 2 loader workers) ends with the uninterrupted run's weights,
    optimizer, schedule and online probe bit for bit."""
    expected = fit_and_state(cifar10_dir, tmp_path / "straight", WARMUP, **TINY_RUN)
    folder = tmp_path / "straight" / "checkpoints"
    resumed = tmp_path / "resumed"
    got = fit_and_state(cifar10_dir, resumed, WARMUP, ckpt=folder / "step=4.ckpt", **TINY_RUN)
    assert expected["global_step"] == STEPS
    assert_bitwise_equal(got, expected, "CPC resumed at step 4")
    # The export holds the patch encoder (layer-normalised timm keys) and the grid it saw.
    meta = export_backbone(folder / f"step={STEPS}.ckpt", tmp_path / "cpc_r")
    assert meta["patch_grid"] == {"patch": 8, "stride": 4, "size": 7}
    assert meta["backbone_kwargs"] == {"norm": "layer"}
    encoder = timm.create_model("test_resnet", num_classes=0, norm_layer="groupnorm1").eval()
    encoder.load_state_dict(load_file(meta["files"]["safetensors"]))
    model = CPC.load_from_checkpoint(folder / f"step={STEPS}.ckpt", weights_only=True).eval()
    images = torch.randn(2, 3, 32, 32)
    patches = extract_patches(images, model.grid).flatten(0, 2)
    pooled = encoder(patches).unflatten(0, (2, 49)).mean(1)
    torch.testing.assert_close(pooled, model.extract_features(images))
