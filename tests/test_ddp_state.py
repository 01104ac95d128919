"""Under DDP the stateful pieces stay identical on every rank: EMA teachers and queues."""

import torch

from lightning_ssl.methods import BYOL, MoCo
from tests.ddp_utils import lightning_env, run_distributed
from tests.methods.helpers import SyntheticViews, quick_trainer

TINY = dict(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16)


def _worker(rank: int, world_size: int) -> dict:
    lightning_env(rank, world_size)
    out = {}
    for name, model in (
        ("byol", lambda link: BYOL(**TINY, pred_hidden_dim=32, **link)),
        ("moco", lambda link: MoCo(**TINY, queue_size=64, **link)),
    ):
        torch.manual_seed(rank)  # different inits: DDP must broadcast, the teacher must follow
        data = SyntheticViews(n=64, batch_size=8)
        module = model(data.link())
        trainer = quick_trainer(max_steps=3, devices=world_size, strategy="ddp")
        trainer.fit(module, data)
        out[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return out


def test_teachers_and_queues_are_identical_on_every_rank():
    ranks = run_distributed(_worker, 2)
    for name in ("byol", "moco"):
        first, second = ranks[0][name], ranks[1][name]
        assert first.keys() == second.keys()
        for key in first:
            # BN running statistics are per rank under DDP (re-broadcast from rank 0 at every
            # forward; SyncBN makes them global): everything else must be equal.
            if key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
                continue
            assert torch.equal(first[key], second[key]), f"{name}: {key} differs across ranks"
        teacher = [k for k in first if k.startswith("teacher.")]
        assert teacher and any(
            not torch.equal(first[k], first[k.replace("teacher.0.", "backbone.", 1)])
            for k in teacher
            if k.startswith("teacher.0.") and first[k].is_floating_point()
        ), f"{name}: the teacher did not move away from the student"
    # MoCo's queue received 3 steps x 2 ranks x 8 keys
    assert int(ranks[0]["moco"]["queue.ptr"]) == 48
