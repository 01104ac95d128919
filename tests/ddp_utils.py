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

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


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
