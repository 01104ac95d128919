"""Training batches with sample indices: ``(views, labels, indices)``, each index the image's
position in ``dataset("train")``, on the CPU path, the batched path, with ``images_on_device``
and under DDP (2 gloo processes: every image of the epoch exactly once over the ranks)."""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import pytest
import torch
from torch.utils.data import ConcatDataset

from lightning_ssl.data.datamodule import InMemoryDataModule
from lightning_ssl.data.datasets import TensorImageDataset
from tests.ddp_utils import lightning_env, run_distributed

pytestmark = pytest.mark.usefixtures("one_thread")


class _NamedImages(InMemoryDataModule):
    """Each image is filled with its own value: part one 0..29, part two 100..(100 + extra);
    the training split concatenates both (like STL-10's train + unlabeled)."""

    default_image_size: ClassVar[int] = 8
    default_mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)
    default_std: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    fixed_num_classes: ClassVar[int | None] = 3
    extra: ClassVar[int] = 20

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return _constant_images(torch.arange(30)), torch.arange(30) % 3

    def build_dataset(self, split, transform):
        first = super().build_dataset(split, transform)
        if split != "train":
            return first
        values = 100 + torch.arange(self.extra)
        second = TensorImageDataset(_constant_images(values), values % 3, transform)
        return ConcatDataset([first, second])


def _constant_images(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1).expand(-1, 3, 8, 8).to(torch.uint8).contiguous()


def _value_of_view(view: torch.Tensor) -> list[int]:
    """The value an image was filled with, read back from its (unaugmented) view."""
    return (view[:, 0, 4, 4] * 255).round().long().tolist()


def _dataset_values(dm: _NamedImages) -> list[int]:
    train = dm.dataset("train")
    if dm.batched_augmentation:
        return [int(train[i][0][0, 0, 0]) for i in range(len(train))]
    return _value_of_view(torch.stack([train[i][0][0] for i in range(len(train))]))


def _batches(dm: _NamedImages):
    for batch in dm.train_dataloader():
        yield dm.augment_batch(batch) if dm.batched_augmentation else batch


PATHS = {
    "cpu": {},
    "cpu_workers": {"num_workers": 2},
    "batched": {"batched_augmentation": True},
    "on_device": {"batched_augmentation": True, "images_on_device": True},
}


@pytest.mark.parametrize("subset", [None, 24])
@pytest.mark.parametrize("path", list(PATHS))
def test_indices_name_the_dataset_image_on_every_path(path, subset):
    options = {"num_workers": 0, **PATHS[path]}
    dm = _NamedImages("unused", batch_size=4, augmentation="none", train_subset=subset, **options)
    dm.hparams.sample_indices = True
    expected = _dataset_values(dm)
    seen = []
    for views, labels, indices in _batches(dm):
        assert indices.dtype == torch.int64
        assert _value_of_view(views[0]) == [expected[i] for i in indices.tolist()]
        assert labels.tolist() == [expected[i] % 3 for i in indices.tolist()]
        seen += indices.tolist()
    size = subset or 50
    assert len(seen) == len(set(seen)) == size - size % 4 and set(seen) <= set(range(size))
    plain = _NamedImages("unused", batch_size=4, augmentation="none", **options)
    assert len(next(iter(_batches(plain)))) == 2  # methods that do not ask keep (views, labels)


class _IndexRecorder(L.LightningModule):
    """Records what a method that asks for sample indices receives."""

    needs_sample_indices: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        views, _, indices = batch
        self.seen += list(zip(indices.tolist(), _value_of_view(views[0]), strict=True))
        return self.layer(views[0][:, :1, 0, 0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _ddp_worker(rank: int, world_size: int) -> dict[str, list]:
    lightning_env(rank, world_size)
    out = {}
    for path in ("cpu", "on_device"):
        dm = _NamedImages("unused", batch_size=4, num_workers=0, augmentation="none", **PATHS[path])
        dm.extra = 18  # 48 images: 6 batches of 4 on each of 2 ranks, none dropped
        model = _IndexRecorder()
        trainer = L.Trainer(
            accelerator="cpu", devices=world_size, strategy="ddp", max_epochs=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(model, dm)
        out[path] = [model.seen, _dataset_values(dm) if dm.batched_augmentation else None]
    return out


def test_ddp_ranks_receive_global_indices_each_image_once_per_epoch():
    ranks = run_distributed(_ddp_worker, 2)
    for path in ("cpu", "on_device"):
        expected = ranks[0]["on_device"][1]  # the same dataset on both paths
        pairs = [pair for rank in ranks for pair in rank[path][0]]
        assert sorted(index for index, _ in pairs) == list(range(48)), path
        assert all(value == expected[index] for index, value in pairs), path
        assert all(len(rank[path][0]) == 24 for rank in ranks), path
