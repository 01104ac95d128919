"""iBOT/DINOv2's cross-process pieces: 2 processes == 1 process with both batches.

The Sinkhorn-Knopp teacher normalises over the global batch; over masked patches the two
processes hold different numbers of rows (each image draws its own masking ratio), so the
codes must still equal the single-process codes of all rows. iBOT's patch center averages over
the images of all processes. The patch loss is a mean over this process's images, so DDP's
gradient average gives the single-process gradient (each process has the same number of
images, whatever its masked-patch count). KoLeo is per process in DINOv2 (its gather is
commented out), so it has no cross-process form to test.
"""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.losses import ibot_patch_loss, teacher_targets, update_patch_center
from tests.ddp_utils import run_distributed

WORLD, IMAGES, PATCHES, K = 2, 3, 4, 6


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD * IMAGES
    masks = torch.rand(n, PATCHES, generator=g) < 0.5
    masks[:IMAGES, 0] = True  # rank 0 and rank 1 hold different masked counts
    masks[IMAGES:, :2] = True
    return {
        "student": torch.randn(n, PATCHES, K, generator=g),
        "teacher": 3 * torch.randn(n, PATCHES, K, generator=g),
        "masks": masks,
        "center": torch.randn(1, K, generator=g),
    }


def _compute(images: slice) -> dict:
    x = _inputs()
    masks = x["masks"][images]
    student = x["student"][images].clone().requires_grad_()
    teacher = x["teacher"][images]
    codes = teacher_targets(teacher[masks], 0.07, "sinkhorn")
    loss = ibot_patch_loss(student[masks], codes, masks, 0.1)
    loss.backward()
    return {
        "rows": int(masks.sum()),
        "codes": codes,
        "cls_codes": teacher_targets(teacher[:, 0], 0.07, "sinkhorn", sinkhorn_iterations=5),
        "center": update_patch_center(x["center"], teacher, 0.9),
        "loss": loss.detach(),
        "grad": student.grad,
    }


def _worker(rank: int, world_size: int) -> dict:
    return _compute(slice(rank * IMAGES, (rank + 1) * IMAGES))


@pytest.fixture(scope="module")
def ddp() -> list[dict]:
    return run_distributed(_worker, WORLD)


@pytest.fixture(scope="module")
def single() -> dict:
    return _compute(slice(None))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_sinkhorn_over_unequal_masked_rows_equals_one_process(ddp, single):
    assert ddp[0]["rows"] != ddp[1]["rows"]
    _close(torch.cat([out["codes"] for out in ddp]), single["codes"])
    _close(torch.cat([out["cls_codes"] for out in ddp]), single["cls_codes"])


def test_patch_center_identical_on_ranks_and_equal_one_process(ddp, single):
    assert torch.equal(ddp[0]["center"], ddp[1]["center"])
    _close(ddp[0]["center"], single["center"])


def test_patch_loss_and_gradients_equal_one_process(ddp, single):
    _close(torch.stack([out["loss"] for out in ddp]).mean(), single["loss"])
    for r, out in enumerate(ddp):
        _close(out["grad"] / WORLD, single["grad"][r * IMAGES : (r + 1) * IMAGES])
    assert single["grad"].abs().sum() > 0
