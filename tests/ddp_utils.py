"""Run a function in N spawned CPU processes joined by a gloo process group.

``strategy="ddp"`` inside pytest would re-launch pytest, so multi-process tests spawn workers
themselves. The worker function must be importable (module level) and picklable arguments only.

Example:
    >>> def worker(rank, world_size, x):  # doctest: +SKIP
    ...     return x * rank
    >>> run_distributed(worker, 2, 3)  # doctest: +SKIP
    [0, 3]
"""

from __future__ import annotations

import gc
import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from tests.methods.helpers import quick_trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable, args: tuple, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    gc.freeze()  # the imports' objects: the exit's last collection skips them (seconds each)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save({"ok": True, "result": result}, os.path.join(out_dir, f"{rank}.pt"))
    except BaseException:
        torch.save(
            {"ok": False, "error": traceback.format_exc()}, os.path.join(out_dir, f"{rank}.pt")
        )
        raise
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], world_size: int = 2, *args: Any) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; return results."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _entry,
            args=(world_size, _free_port(), fn, args, out_dir),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        results = []
        for r in range(world_size):
            payload = torch.load(os.path.join(out_dir, f"{r}.pt"), weights_only=False)
            if not payload["ok"]:
                raise RuntimeError(f"rank {r} failed:\n{payload['error']}")
            results.append(payload["result"])
        return results


def lightning_env(rank: int, world_size: int) -> None:
    """Environment of a process started by an external launcher (torchrun-like) for Lightning.

    Call inside a :func:`run_distributed` worker before building a ``Trainer(strategy="ddp",
    devices=world_size)``: Lightning then joins the existing gloo process group.
    """
    os.environ.update(
        LOCAL_RANK=str(rank),
        RANK=str(rank),
        NODE_RANK="0",
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
    )


class RecordSteps(L.Callback):
    """Each step's loss and the first step's gradients, as the optimizer sees them (after DDP
    has averaged them)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.grads:
            self.grads = {
                n: p.grad.detach().clone()
                for n, p in pl_module.named_parameters()
                if p.grad is not None
            }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_and_record(
    model: L.LightningModule, loader: DataLoader, world_size: int, **trainer_options: Any
) -> dict[str, Any]:
    """Fit ``model`` on ``loader`` in this process (``world_size`` 1) or as one rank of a
    :func:`run_distributed` group; return ``{"losses", "grads", "state"}`` to compare a 2-process
    run with a 1-process run on the union batch.

    Each rank's loader gives its own half (no distributed sampler); validation is off.
    ``trainer_options`` go to the Trainer (``max_steps``, ``precision``).
    """
    record = RecordSteps()
    extra = {"devices": world_size, "strategy": "ddp"} if world_size > 1 else {}
    trainer = quick_trainer(
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=[record],
        **extra,
        **trainer_options,
    )
    trainer.fit(model, train_dataloaders=loader)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"losses": record.losses, "grads": record.grads, "state": state}
