import warnings
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ssl.callbacks.queue import QueueUpdater
from lightning_ssl.nn.queue import FeatureQueue
from tests.ddp_utils import run_distributed

EPOCH = SimpleNamespace(current_epoch=0)


def _two_rank_worker(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    module = nn.Module()
    module.queue = FeatureQueue(size=6, dim=2, with_labels=True)
    updater = QueueUpdater(module.queue)
    updater.setup(EPOCH, module, "fit")
    for step in range(2):  # 2 ranks x 2 keys x 2 steps = 8 keys: wraps the queue of 6
        keys = torch.full((2, 2), 100.0 * step + 10 * rank) + torch.arange(2.0)[:, None]
        labels = keys[:, 0].long()
        updater.on_train_batch_end(EPOCH, module, {"queue_keys": keys}, (None, labels), step)
    return {k: v.clone() for k, v in module.queue.state_dict().items()}


def test_two_ranks_hold_the_same_queue_in_rank_order():
    rank0, rank1 = run_distributed(_two_rank_worker, 2)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # pushed in order 0, 1 | 10, 11 (step 0), then 100, 101 | 110, 111: the last two wrap
    assert rank0["features"][:, 0].tolist() == [110, 111, 10, 11, 100, 101]
    assert rank0["labels"].tolist() == [110, 111, 10, 11, 100, 101]
    assert int(rank0["ptr"]) == 2 and int(rank0["filled"]) == 6


class KeysModule(pl.LightningModule):
    """Returns its inputs as queue keys; the queue is a submodule."""

    def __init__(self, start_epoch: int) -> None:
        super().__init__()
        self.queue = FeatureQueue(size=16, dim=2, with_labels=True)
        self.weight = nn.Parameter(torch.zeros(()))
        self.start_epoch = start_epoch

    def configure_callbacks(self):
        return [QueueUpdater(self.queue, start_epoch=self.start_epoch)]

    def training_step(self, batch, batch_idx):
        x, _ = batch
        keys = x + 1000 * self.current_epoch  # distinguishes epochs
        return {"loss": (self.weight * x).sum(), "queue_keys": keys.detach()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_start_epoch_with_trainer():
    x = torch.arange(12.0).reshape(6, 2)
    data = DataLoader(TensorDataset(x, torch.arange(6)), batch_size=2)
    model = KeysModule(start_epoch=1)
    pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, data)
    assert int(model.queue.filled) == 6  # epoch 0 skipped, epoch 1's three batches pushed
    torch.testing.assert_close(model.queue.valid(), x + 1000)
    assert model.queue.valid_labels().tolist() == list(range(6))


def test_queue_smaller_than_global_batch_warns_once():
    module = nn.Module()
    module.queue = FeatureQueue(size=3, dim=2)
    updater = QueueUpdater(module.queue)
    updater.setup(EPOCH, module, "fit")
    with pytest.warns(UserWarning, match=r"holds 3 rows but the global batch has 5"):
        updater.on_train_batch_end(EPOCH, module, {"queue_keys": torch.ones(5, 2)}, None, 0)
    assert int(module.queue.filled) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        updater.on_train_batch_end(EPOCH, module, {"queue_keys": torch.ones(5, 2)}, None, 1)


def test_label_key_and_validation():
    module = nn.Module()
    module.queue = FeatureQueue(size=4, dim=2, with_labels=True)
    updater = QueueUpdater(module.queue, output_key="k", label_key="y")
    updater.setup(EPOCH, module, "fit")
    outputs = {"k": torch.zeros(2, 2), "y": torch.tensor([7, 8])}
    updater.on_train_batch_end(EPOCH, module, outputs, None, 0)
    assert module.queue.valid_labels().tolist() == [7, 8]
    with pytest.raises(KeyError, match="'k'"):
        updater.on_train_batch_end(EPOCH, module, {"loss": torch.zeros(())}, None, 1)
    with pytest.raises(ValueError, match="submodule"):
        QueueUpdater(FeatureQueue(4, 2)).setup(EPOCH, module, "fit")
    with pytest.raises(TypeError, match="FeatureQueue"):
        QueueUpdater(torch.zeros(4, 2))
