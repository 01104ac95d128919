"""Tiled NT-Xent / InfoNCE equal the plain losses (values and gradients) without an n x N tensor."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lightning_ssl.losses import (
    info_nce_loss,
    nt_xent_loss,
    tiled_info_nce_loss,
    tiled_logsumexp,
    tiled_nt_xent_loss,
)
from tests.ddp_utils import run_distributed


def _leaves(*shapes: tuple[int, ...], seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes]


def _loss_and_grads(fn, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = fn(inputs)
    return loss.detach(), list(torch.autograd.grad(loss, inputs))


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Elementwise relative error <= rtol, with an absolute floor of rtol x the largest entry."""
    atol = rtol * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def _assert_same(plain, tiled, inputs: list[torch.Tensor]) -> None:
    loss_p, grads_p = _loss_and_grads(plain, inputs)
    loss_t, grads_t = _loss_and_grads(tiled, inputs)
    assert loss_t.dtype == torch.float32
    _close(loss_t, loss_p)
    for grad_t, grad_p in zip(grads_t, grads_p, strict=True):
        _close(grad_t, grad_p)


# (batch, dim, views, tile): tiles dividing the V*B rows, not dividing them, 1, beyond the batch.
NT_XENT_CASES = [(8, 16, 2, 4), (7, 5, 2, 3), (6, 32, 3, 5), (5, 8, 4, 1), (9, 128, 2, 64)]


@pytest.mark.parametrize("t", [0.07, 0.2, 0.5])
@pytest.mark.parametrize(("batch", "dim", "num_views", "tile"), NT_XENT_CASES)
def test_nt_xent_loss_and_gradients_match_plain(batch, dim, num_views, tile, t):
    views = _leaves(*[(batch, dim)] * num_views, seed=batch * dim + num_views)
    _assert_same(
        lambda v: nt_xent_loss(v, t), lambda v: tiled_nt_xent_loss(v, t, tile_size=tile), views
    )


@pytest.mark.parametrize("t", [0.07, 0.2, 0.5])
@pytest.mark.parametrize(("batch", "dim", "tile"), [(8, 16, 4), (7, 5, 3), (9, 64, 32)])
@pytest.mark.parametrize("queue", [0, 11])
def test_info_nce_loss_and_gradients_match_plain(batch, dim, tile, t, queue):
    shapes = [(batch, dim), (batch, dim)] + ([(queue, dim)] if queue else [])
    inputs = _leaves(*shapes, seed=batch + dim + queue)

    def plain(x):
        return info_nce_loss(x[0], x[1], t, negatives=x[2] if queue else None)

    def tiled(x):
        return tiled_info_nce_loss(x[0], x[1], t, x[2] if queue else None, tile_size=tile)

    _assert_same(plain, tiled, inputs)


def test_tiled_logsumexp_masks_one_column_per_row():
    q, k = _leaves((6, 4), (9, 4), seed=3)
    self_cols = torch.tensor([0, 8, 3, 3, 5, 1])
    logits = q @ k.T / 0.3
    logits[torch.arange(6), self_cols] = float("-inf")
    _close(tiled_logsumexp(q, k, 0.3, tile_size=2, self_cols=self_cols), logits.logsumexp(1))
    with pytest.raises(ValueError, match="tile_size"):
        tiled_logsumexp(q, k, 0.3, tile_size=0)


def test_bf16_autocast_inputs_give_float32_loss_equal_to_plain():
    views = _leaves((12, 32), (12, 32), seed=4, dtype=torch.bfloat16)
    q, k = _leaves((12, 32), (12, 32), seed=5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for plain, tiled, inputs in [
            (lambda v: nt_xent_loss(v, 0.07), lambda v: tiled_nt_xent_loss(v, 0.07, 5), views),
            (
                lambda x: info_nce_loss(*x, 0.07),
                lambda x: tiled_info_nce_loss(*x, 0.07, tile_size=5),
                [q, k],
            ),
        ]:
            loss_p, grads_p = _loss_and_grads(plain, inputs)
            loss_t, grads_t = _loss_and_grads(tiled, inputs)
            assert loss_t.dtype == torch.float32 and torch.isfinite(loss_t)
            _close(loss_t, loss_p)
            for grad_t, grad_p in zip(grads_t, grads_p, strict=True):
                assert grad_t.dtype == torch.bfloat16
                _close(grad_t.float(), grad_p.float(), rtol=1e-2)  # one bf16 rounding apart


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.ops = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.__name__.split(".")[0])
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def _nt_xent(x: list[torch.Tensor], tile: int | None = None) -> torch.Tensor:
    return nt_xent_loss(x[:2], 0.1) if tile is None else tiled_nt_xent_loss(x[:2], 0.1, tile)


def _info_nce_queue(x: list[torch.Tensor], tile: int | None = None) -> torch.Tensor:
    if tile is None:
        return info_nce_loss(x[0], x[1], 0.1, negatives=x[2])
    return tiled_info_nce_loss(x[0], x[1], 0.1, negatives=x[2], tile_size=tile)


@pytest.mark.parametrize("loss_fn", [_nt_xent, _info_nce_queue], ids=["nt_xent", "info_nce_queue"])
def test_forward_and_backward_never_create_an_n_by_N_tensor(loss_fn):
    batch, dim, tile = 64, 8, 16  # logits 128 x 128 (NT-Xent) or 64 x 64 (queue of 64)
    inputs = _leaves((batch, dim), (batch, dim), (batch, dim), seed=6)
    with _LargestTensor() as plain:
        loss_fn(inputs).backward()
    with _LargestTensor() as tiled:
        loss_fn(inputs, tile).backward()
    assert plain.numel >= batch * batch  # the probe sees the plain loss's logit matrix
    # Inputs, gathered keys and their gradients are (2B, D); nothing else exceeds one tile.
    assert tiled.numel <= max(tile * tile, 2 * batch * dim) < batch * batch
    assert "addmm_" in tiled.ops  # the backward's tile updates ran under the probe


# ----------------------------------------------------------------------------- processes
WORLD, BATCH = 2, 5
DDP_CASES = {
    "nt_xent": lambda x: tiled_nt_xent_loss(x[:2], 0.1, tile_size=3),
    "nt_xent_3_views": lambda x: tiled_nt_xent_loss(x[:3], 0.2, tile_size=4),
    "info_nce": lambda x: tiled_info_nce_loss(x[0], x[1], 0.1, tile_size=3),
    "info_nce_queue": lambda x: tiled_info_nce_loss(x[0], x[1], 0.1, x[3][:7], tile_size=4),
}
PLAIN = {
    "nt_xent": lambda x: nt_xent_loss(x[:2], 0.1),
    "nt_xent_3_views": lambda x: nt_xent_loss(x[:3], 0.2),
    "info_nce": lambda x: info_nce_loss(x[0], x[1], 0.1),
    "info_nce_queue": lambda x: info_nce_loss(x[0], x[1], 0.1, negatives=x[3][:7]),
}


def _rank_inputs(rows: slice) -> list[torch.Tensor]:
    """Three (WORLD*BATCH, 8) tensors split by rank, and a queue shared by all ranks."""
    *views, queue = (x.detach() for x in _leaves(*[(WORLD * BATCH, 8)] * 4, seed=7))
    return [x[rows].clone().requires_grad_() for x in views] + [queue]


def _run(cases: dict, rows: slice) -> dict:
    out = {}
    for name, fn in cases.items():
        inputs = _rank_inputs(rows)
        loss = fn(inputs)
        out[name] = (loss.detach(), torch.autograd.grad(loss, inputs[:3], allow_unused=True))
    return out


def _worker(rank: int, world_size: int) -> dict:
    return _run(DDP_CASES, slice(rank * BATCH, (rank + 1) * BATCH))


def test_two_processes_equal_one_process_with_the_global_batch():
    ddp = run_distributed(_worker, WORLD)
    single = _run(PLAIN, slice(None))
    for name, (loss_1, grads_1) in single.items():
        _close(torch.stack([out[name][0] for out in ddp]).mean(), loss_1)
        for r, out in enumerate(ddp):
            for grad_r, grad_1 in zip(out[name][1], grads_1, strict=True):
                if grad_1 is None:  # a view this loss does not use
                    assert grad_r is None
                    continue
                # DDP averages over ranks: rank r's rows get grad_r / WORLD.
                _close(grad_r / WORLD, grad_1[r * BATCH : (r + 1) * BATCH])


# ----------------------------------------------------------------------------- methods
def _step_losses(name: str, tile: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """training_step loss of the plain and the tiled method, same weights and batch."""
    # Imported here: the spawned DDP workers import this module, and Lightning takes seconds.
    from lightning_ssl import methods
    from tests.methods.helpers import SyntheticViews

    cls = getattr(methods, name)
    data = SyntheticViews(batch_size=6, num_local_crops=kwargs.pop("num_local_crops", 0))
    small = dict(backbone="test_resnet", proj_hidden_dim=32, proj_dim=16, **data.link())
    torch.manual_seed(0)
    plain = cls(**small, **kwargs)
    tiled = cls(**small, **kwargs, loss_tile_size=tile)
    tiled.load_state_dict(plain.state_dict())
    batch = next(iter(data.train_dataloader()))
    losses = []
    for model in (plain, tiled):
        model.log = lambda *a, **k: None
        losses.append(model.training_step(batch, 0)["loss"])
    return losses[0], losses[1]


def test_simclr_loss_tile_size_gives_the_plain_training_step_loss():
    plain, tiled = _step_losses("SimCLR", tile=5, num_local_crops=2, temperature=0.2)
    assert tiled.requires_grad
    _close(tiled, plain)


def test_mocov3_loss_tile_size_gives_the_plain_training_step_loss():
    plain, tiled = _step_losses("MoCoV3", tile=4, pred_hidden_dim=32, temperature=0.2)
    _close(tiled, plain)
