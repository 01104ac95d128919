"""Collapse monitor: ``train/z_std`` is ~0 for a collapsed embedding, ~1/sqrt(d) for a spread one.

That every method returns its embeddings and logs ``train/z_std`` in a real run is tested in
``tests/test_precision.py`` (one parametrized run per method, under bf16 autocast).
"""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from lightning_ssl.callbacks import CollapseMonitor, collapse, embedding_std
from lightning_ssl.methods import SimCLR
from tests.methods.helpers import quick_trainer

DIM = 64


def test_embedding_std_of_constant_is_zero():
    z = torch.ones(256, DIM) * torch.randn(DIM)  # every sample the same vector
    assert embedding_std([z, z]).item() == pytest.approx(0.0, abs=1e-6)


def test_embedding_std_of_random_is_one_over_sqrt_d():
    # Each coordinate of a uniform unit vector has mean 0 and variance 1/d.
    z = torch.randn(4096, DIM, generator=torch.Generator().manual_seed(0))
    assert embedding_std(z).item() == pytest.approx(1 / math.sqrt(DIM), rel=0.02)
    assert embedding_std(z.bfloat16()).dtype == torch.float32


class _Emitter(L.LightningModule):
    """Returns fixed embeddings from each step; a tiny layer provides a loss to optimize."""

    def __init__(self, collapsed: bool) -> None:
        super().__init__()
        self.layer = nn.Linear(DIM, 1)
        self.collapsed = collapsed

    def training_step(self, batch, batch_idx):
        (x,) = batch
        z = x[:1].expand_as(x) if self.collapsed else x
        return {"loss": self.layer(x).pow(2).mean(), "embeddings": [z]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(collapsed: bool, monitor: CollapseMonitor, **trainer_kwargs) -> L.Trainer:
    x = torch.randn(64, DIM, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=32)
    trainer = quick_trainer(callbacks=[monitor], limit_val_batches=0, **trainer_kwargs)
    trainer.fit(_Emitter(collapsed), train_dataloaders=data)
    return trainer


def test_collapsed_embedding_warns_once_and_logs_zero():
    with pytest.warns(UserWarning, match=r"collapse: train/z_std = .* 1/sqrt\(64\)") as record:
        trainer = _fit(True, CollapseMonitor(every_n_steps=1), max_steps=4)
    assert sum("collapse" in str(w.message) for w in record) == 1
    assert trainer.callback_metrics["train/z_std"].item() == pytest.approx(0.0, abs=1e-6)


def test_spread_embedding_does_not_warn():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = _fit(False, CollapseMonitor(every_n_steps=1), max_steps=2)
    assert not [w for w in record if "collapse" in str(w.message)]
    z_std = trainer.callback_metrics["train/z_std"].item()
    assert z_std == pytest.approx(1 / math.sqrt(DIM), rel=0.15)  # 32 samples per batch


def test_interval_follows_log_every_n_steps_by_default():
    trainer = _fit(True, CollapseMonitor(warn_ratio=0.5), max_steps=2, log_every_n_steps=3)
    assert "train/z_std" not in trainer.callback_metrics  # steps 1, 2: not a multiple of 3
    with pytest.warns(UserWarning, match="collapse"):
        trainer = _fit(True, CollapseMonitor(), max_steps=3, log_every_n_steps=3)
    assert "train/z_std" in trainer.callback_metrics


def test_computed_once_per_optimizer_step_under_accumulation(monkeypatch):
    calls = []
    original = collapse.embedding_std
    monkeypatch.setattr(collapse, "embedding_std", lambda z: calls.append(1) or original(z))
    _fit(False, CollapseMonitor(every_n_steps=1), max_steps=2, accumulate_grad_batches=2)
    assert len(calls) == 2  # 4 batches, 2 optimizer steps


@pytest.mark.parametrize("kwargs", [dict(every_n_steps=0), dict(warn_ratio=0.0)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        CollapseMonitor(**kwargs)


def test_base_method_always_adds_the_monitor():
    method = SimCLR(backbone="timm:test_resnet", proj_hidden_dim=16, proj_dim=8)
    callbacks = method.configure_callbacks()  # from the base class: a method cannot forget it
    assert any(isinstance(c, CollapseMonitor) for c in callbacks)
