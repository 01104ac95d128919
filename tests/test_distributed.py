import torch

from lightning_ssl import distributed
from tests.ddp_utils import run_distributed


def _gather_worker(rank: int, world_size: int) -> dict:
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    g = distributed.gather(x)
    # loss depends on every rank's rows with rank-specific weights
    (g * torch.arange(g.shape[0]).float()[:, None] * (rank + 1)).sum().backward()
    s = distributed.all_reduce_sum(x)
    return {"gathered": g.detach(), "grad": x.grad, "sum": s.detach()}


def test_gather_backward_sums_over_ranks():
    out = run_distributed(_gather_worker, 2)
    expected = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    for r in range(2):
        assert torch.equal(out[r]["gathered"], expected)
        assert torch.equal(out[r]["sum"], torch.full((2, 3), 3.0))
    # d/dx_r of sum over ranks' losses: row weight * (1 + 2)
    for r in range(2):
        rows = torch.arange(2 * r, 2 * r + 2).float()[:, None].expand(2, 3)
        assert torch.allclose(out[r]["grad"], rows * 3)


def test_single_process_noops():
    x = torch.randn(3, 4, requires_grad=True)
    assert distributed.gather(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0
