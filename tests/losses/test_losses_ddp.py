"""Two processes with B samples each == one process with the 2B samples, for every loss.

DDP averages parameter gradients over the ``W`` ranks. For the rows ``x_r`` of rank ``r`` the
single-process-equivalent condition is therefore ``grad_r(x_r) / W == dL_1proc/dx_r``, with
``L_1proc`` the loss of one process on the full batch; the losses that are means over local
anchors/samples (NT-Xent, InfoNCE, SwAV, DINO, VICReg's invariance) give ``L_1proc`` as the
mean over ranks of the rank losses, Barlow Twins gives it on every rank.

All losses run in one spawn (starting processes dominates the runtime).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.losses import (
    barlow_twins_loss,
    dino_loss,
    info_nce_loss,
    negative_cosine_similarity,
    nt_xent_loss,
    sinkhorn_knopp,
    swav_loss,
    update_dino_center,
    variance_covariance,
    vicreg_loss,
    vicreg_terms,
)
from tests.ddp_utils import run_distributed

WORLD, BATCH = 2, 4  # per-rank batch; the single process sees WORLD * BATCH rows
SHARED = {"queue", "center"}  # identical on every rank, not split


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    n = WORLD * BATCH

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    prototypes = F.normalize(randn(6, 8), dim=1)
    return {
        "views": [randn(n, 8) for _ in range(3)],
        "q": randn(n, 8),
        "k": randn(n, 8),
        "queue": randn(12, 8),
        "z_a": randn(n, 8) * 2 + 1,
        "z_b": randn(n, 8),
        "scores": [F.normalize(randn(n, 8), dim=1) @ prototypes.T for _ in range(4)],
        "student": [randn(n, 10) * 3 for _ in range(6)],
        "teacher": [randn(n, 10) * 3 for _ in range(2)],
        "center": randn(1, 10),
    }


def _local(rows: slice) -> dict:
    """This rank's rows of every input as fresh leaves requiring gradients."""
    out = {}
    for key, value in _inputs().items():
        if key in SHARED:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [v[rows].clone().requires_grad_() for v in value]
        else:
            out[key] = value[rows].clone().requires_grad_()
    return out


def _grads(x: dict) -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in x.items():
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if v.grad is not None:
                flat[f"{key}[{i}]"] = v.grad
    return flat


def _swav(x: dict) -> torch.Tensor:
    codes = [sinkhorn_knopp(s) for s in x["scores"][:2]]  # global crops
    return swav_loss(x["scores"], codes, temperature=0.1)


CASES = {
    "nt_xent": lambda x: nt_xent_loss(x["views"][:2], temperature=0.1),
    "nt_xent_3_views": lambda x: nt_xent_loss(x["views"], temperature=0.2),
    "info_nce": lambda x: info_nce_loss(x["q"], x["k"], temperature=0.1),
    "info_nce_queue": lambda x: info_nce_loss(x["q"], x["k"], 0.1, negatives=x["queue"]),
    "negative_cosine": lambda x: negative_cosine_similarity(x["q"], x["k"]),
    "barlow_twins": lambda x: barlow_twins_loss(x["z_a"], x["z_b"]),
    "vicreg": lambda x: vicreg_loss(x["z_a"], x["z_b"]),
    "swav": _swav,
    "dino": lambda x: dino_loss(x["student"], x["teacher"], x["center"]),
    "variance_covariance": lambda x: sum(variance_covariance(x["z_a"])),
}
GLOBAL = {"barlow_twins", "variance_covariance"}  # the same global loss on every rank


def _compute(rows: slice) -> dict:
    losses = {}
    for name, fn in CASES.items():
        x = _local(rows)
        loss = fn(x)
        loss.backward()
        losses[name] = (loss.detach(), _grads(x))
    x = _local(rows)
    return {
        "losses": losses,
        "codes": [sinkhorn_knopp(s) for s in x["scores"]],
        "codes_converged": sinkhorn_knopp(x["scores"][0], iterations=50),
        "center": update_dino_center(x["center"], x["teacher"], momentum=0.9),
        "vicreg_terms": {
            k: v.detach() for k, v in vicreg_terms(x["z_a"], x["z_b"])._asdict().items()
        },
    }


def _worker(rank: int, world_size: int) -> dict:
    assert world_size == WORLD
    return _compute(slice(rank * BATCH, (rank + 1) * BATCH))


@pytest.fixture(scope="module")
def ddp() -> list[dict]:
    return run_distributed(_worker, WORLD)


@pytest.fixture(scope="module")
def single() -> dict:
    return _compute(slice(None))


def _rows(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t[rank * BATCH : (rank + 1) * BATCH]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_loss_and_gradients_equal_single_process(name: str, ddp: list[dict], single: dict):
    loss_1, grads_1 = single["losses"][name]
    rank_losses = torch.stack([out["losses"][name][0] for out in ddp])
    _close(rank_losses.mean(), loss_1)
    if name in GLOBAL:
        for loss in rank_losses:
            _close(loss, loss_1)
    for r, out in enumerate(ddp):
        grads_r = out["losses"][name][1]
        assert grads_r.keys() == grads_1.keys() and grads_r
        for key, grad in grads_r.items():
            _close(grad / WORLD, _rows(grads_1[key], r))


def test_sinkhorn_codes_equal_single_process_rows(ddp: list[dict], single: dict):
    for r, out in enumerate(ddp):
        for codes, codes_1 in zip(out["codes"], single["codes"], strict=True):
            _close(codes, _rows(codes_1, r))
        _close(out["codes_converged"], _rows(single["codes_converged"], r))
    # equipartition holds over the global batch, not per rank
    total = sum(out["codes_converged"].sum(dim=0) for out in ddp)
    torch.testing.assert_close(total, torch.full((6,), WORLD * BATCH / 6), rtol=1e-3, atol=0)


def test_dino_center_identical_on_ranks_and_equal_single_process(ddp: list[dict], single):
    assert torch.equal(ddp[0]["center"], ddp[1]["center"])
    _close(ddp[0]["center"], single["center"])


def test_vicreg_terms_global(ddp: list[dict], single: dict):
    for key in ("variance", "covariance"):  # statistics of the gathered batch
        for out in ddp:
            _close(out["vicreg_terms"][key], single["vicreg_terms"][key])
    for key in ("invariance", "loss"):  # local mean of the invariance
        _close(torch.stack([out["vicreg_terms"][key] for out in ddp]).mean(),
               single["vicreg_terms"][key])  # fmt: skip
