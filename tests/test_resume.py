"""Exact resume: a run stopped and resumed from its checkpoint equals the straight run, bitwise.

For MoCo v2, BYOL, SwAV (queue on) and DINO (2 global + 2 local crops): 2 epochs of 2 optimizer
steps (gradient accumulation 2) straight, against a run that crashes after a checkpoint at the end
of epoch 0 or in the middle of epoch 1, then a fresh model built from another seed resumed with
``trainer.fit(..., ckpt_path=...)``. Compared with ``torch.equal`` under
``torch.use_deterministic_algorithms(True)``: every parameter and buffer (student, teacher, queues
with pointer and fill count, DINO center), the main optimizer and LR scheduler states, the online
probe's head and SGD state, the EMA position, and the logged per-step loss, LR and EMA tau.

The training order is a pure function of the epoch (``DistributedSampler`` with one replica, whose
``set_epoch`` Lightning calls), and the resumed run draws from a differently seeded global RNG, so
the equality proves that nothing the run needs lives outside the checkpoint.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, DistributedSampler

from lightning_ssl.callbacks import EMA, OnlineLinearProbe
from lightning_ssl.methods import BYOL, DINO, MoCo, SwAV
from tests.methods.helpers import SyntheticViews

COMMON = dict(backbone="timm:test_resnet", warmup_epochs=1.0, lr_scaling="none")
METHODS: dict[str, tuple[type, dict[str, Any], dict[str, Any]]] = {
    "moco": (MoCo, dict(queue_size=40, proj_hidden_dim=32, proj_dim=16), {}),
    "byol": (BYOL, dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32), {}),
    "swav": (
        SwAV,
        dict(
            proj_hidden_dim=32,
            proj_dim=16,
            num_prototypes=20,
            queue_size=20,  # wraps around; pointer at 12 after an epoch, at 8 after 1.5
            queue_start_epoch=0,
            freeze_prototypes_steps=2,
        ),
        {},
    ),
    "dino": (
        DINO,
        dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, teacher_temp_warmup_epochs=1.0),
        dict(num_local_crops=2),
    ),
}
STEPS_PER_EPOCH, EPOCHS, ACCUMULATE = 2, 2, 2  # n=32, batch 8


class OrderedViews(SyntheticViews):
    """SyntheticViews shuffled by a sampler seeded per epoch (not by the global RNG), resumable.

    Its ``state_dict`` holds how many batches of the current epoch were trained on (counted where
    the step receives them, not where the loader prefetches), and a restored run skips those.
    A stateful *loader* would not do: Lightning loads loader states in ``FitLoop.setup_data``
    only if the loader is not built yet, but ``configure_optimizers`` already built it (and
    fetched a batch) through ``trainer.estimated_stepping_batches``. The datamodule's state is
    restored before ``configure_optimizers``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed, self.skip = 0, 0

    def train_dataloader(self) -> DataLoader:
        sampler = DistributedSampler(self.train, num_replicas=1, rank=0, shuffle=True, seed=7)
        loader = DataLoader(self.train, self.batch_size, sampler=sampler, drop_last=True)
        return _Skipping(self, loader)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skip = state_dict["consumed"]


class _Skipping:
    """Iterate ``loader``, first dropping the batches ``data`` says were already trained on."""

    def __init__(self, data: OrderedViews, loader: DataLoader) -> None:
        self.data, self.loader = data, loader
        self.sampler, self.batch_size = loader.sampler, loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        batches = iter(self.loader)
        skip = self.data.skip if self.data.skip < len(self.loader) else 0  # 0: epoch completed
        self.data.consumed, self.data.skip = skip, 0
        for _ in range(self.data.consumed):
            next(batches)
        yield from batches


class StepLog(Logger):
    """Per-step loss, EMA tau, learning rate and probe accuracy, keyed by global step."""

    name, version = "steps", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, float]] = {}

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        keys = ("train/loss", "train/ema_tau", "lr", "val/probe_top1", "val/probe_top5")
        self.rows.setdefault(step, {}).update({k: v for k, v in metrics.items() if k in keys})


class LogLR(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"])


class CrashAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


class CrashAtStep(L.Callback):
    """Crash before the first batch after optimizer step ``step`` (checkpointed at its end)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.fixture(autouse=True)
def deterministic(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # restored after seed_everything
    threads, mode = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(mode)
    torch.set_num_threads(threads)


def build(name: str, seed: int) -> tuple[L.LightningModule, OrderedViews]:
    cls, kwargs, data_kwargs = METHODS[name]
    data = OrderedViews(n=STEPS_PER_EPOCH * ACCUMULATE * 8, batch_size=8, **data_kwargs)
    torch.manual_seed(seed)
    return cls(**COMMON, **kwargs, **data.link()), data


def fit(model, data, callbacks=(), ckpt_path=None) -> tuple[L.Trainer, OnlineLinearProbe, StepLog]:
    probe, log = OnlineLinearProbe(lr=0.1), StepLog()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUMULATE,
        logger=log,
        log_every_n_steps=1,
        callbacks=[probe, LogLR(), *callbacks],
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,  # the probe is evaluated, also in the sanity check of a resume
        num_sanity_val_steps=1,
    )
    try:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    except RuntimeError as error:
        assert "simulated crash" in str(error)
    return trainer, probe, log


def assert_same(got: Any, expected: Any, where: str) -> None:
    """Recursive bitwise equality of nested dicts/lists of tensors and Python values."""
    if isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected), where
    else:
        assert got == expected, where


def ema_callback(trainer: L.Trainer) -> EMA | None:
    emas = [c for c in trainer.callbacks if isinstance(c, EMA)]
    return emas[0] if emas else None


STOPS = {  # where the first run stops: at the end of epoch 0, or after 1.5 epochs
    "epoch_end": (STEPS_PER_EPOCH, lambda: ModelCheckpoint(save_top_k=-1), CrashAtEpoch(1)),
    "mid_epoch": (
        STEPS_PER_EPOCH * 3 // 2,
        lambda: ModelCheckpoint(save_top_k=-1, every_n_train_steps=STEPS_PER_EPOCH * 3 // 2),
        CrashAtStep(STEPS_PER_EPOCH * 3 // 2),
    ),
}


def crash_and_resume(name: str, stop: str, tmp_path) -> tuple[Any, ...]:
    step, make_checkpoint, crash = STOPS[stop]
    L.seed_everything(0)
    first, data = build(name, seed=0)
    checkpoint = make_checkpoint()
    checkpoint.dirpath = str(tmp_path / stop)  # a str: the checkpoint stores it
    crashed, _, first_log = fit(first, data, callbacks=[checkpoint, crash])
    (path,) = (tmp_path / stop).glob("*.ckpt")
    assert crashed.global_step == step

    L.seed_everything(123)  # another global RNG state: the rest must come from the checkpoint
    resumed, data = build(name, seed=123)
    assert not torch.equal(
        next(resumed.backbone.parameters()), next(build(name, seed=0)[0].backbone.parameters())
    )
    return resumed, *fit(resumed, data, ckpt_path=path), first_log


@pytest.mark.parametrize("name", list(METHODS))
def test_resume_is_exact(name, tmp_path):
    L.seed_everything(0)
    straight, data = build(name, seed=0)
    trainer, probe, log = fit(straight, data)
    assert trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    ema = ema_callback(trainer)

    for stop, (step, _, _) in STOPS.items():
        resumed, resumed_trainer, resumed_probe, resumed_log, first_log = crash_and_resume(
            name, stop, tmp_path
        )
        assert resumed_trainer.global_step == trainer.global_step, stop
        assert_same(resumed.state_dict(), straight.state_dict(), f"{stop}: model")
        assert_same(
            resumed_trainer.optimizers[0].state_dict(),
            trainer.optimizers[0].state_dict(),
            f"{stop}: optimizer",
        )
        assert_same(
            resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            f"{stop}: scheduler",
        )
        assert_same(resumed_probe.state_dict(), probe.state_dict(), f"{stop}: probe")
        if ema is not None:
            assert ema_callback(resumed_trainer)._last_step == ema._last_step == trainer.global_step

        # Per-step logs (loss, LR, tau): the first run's steps and the resumed run's are the
        # straight run's.
        assert sorted(first_log.rows) == list(range(step)), stop
        assert first_log.rows | resumed_log.rows == log.rows, stop

    assert len(log.rows) == trainer.global_step
    assert probe.state_dict()["optimizer"]["state"], "the probe's SGD has momentum buffers"
    expected = {"train/loss", "lr"} | ({"train/ema_tau"} if ema is not None else set())
    assert all(expected <= row.keys() for row in log.rows.values())
    assert sum("val/probe_top1" in row for row in log.rows.values()) == EPOCHS
