"""A resumed run trains on exactly the batches the uninterrupted run would have, whatever the
checkpoint: mid-epoch, at the end of the training epoch, after validation, with worker processes;
and each image's views are a function of its position in the run only.

Lightning restarts a plain DataLoader at the start of its epoch (batches seen twice, others
never) and, with worker processes, builds the iterator before setting the sampler's epoch; the
DataModules' sampler reads its position from the trainer's restored count of processed batches.
Runs stop at ``max_epochs`` as the shipped configs do: Lightning then builds the training
iterator while ``configure_optimizers`` estimates the step count, before the checkpoint's loop
state is restored (with ``max_steps`` alone it does not, which hid that iterator's stale order).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ssl.data.datamodule import InMemoryDataModule
from lightning_ssl.methods import SimCLR
from tests.methods.helpers import quick_trainer

EPOCHS, BATCH, IMAGES = 3, 8, 64  # 8 batches per epoch
STEPS = EPOCHS * IMAGES // BATCH


class _Numbered(InMemoryDataModule):
    """Images whose label is their index, so the batches say which images were drawn."""

    default_image_size = 8
    fixed_num_classes = IMAGES

    def load_split(self, train: bool):
        noise = torch.Generator().manual_seed(0)  # distinct images: their views differ
        images = torch.randint(0, 256, (IMAGES, 3, 8, 8), dtype=torch.uint8, generator=noise)
        return images, torch.arange(IMAGES)


class _Seen(L.Callback):
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch[1].tolist())


def _fit(folder: Path, workers: int, ckpt: Path | None = None, **data) -> list:
    torch.manual_seed(0)
    datamodule = _Numbered(
        "unused", batch_size=BATCH, num_workers=workers, augmentation="none", **data
    )
    model = SimCLR(backbone="timm:test_resnet", proj_hidden_dim=16, proj_dim=8, image_size=8)
    seen = _Seen()
    steps = ModelCheckpoint(folder, "{step}", every_n_train_steps=3, save_top_k=-1)
    epochs = ModelCheckpoint(folder, "end-{epoch}", save_on_train_epoch_end=True, save_top_k=-1)
    # after validation; mode only makes its state key differ from the one above
    validated = ModelCheckpoint(folder, "val-{epoch}", save_top_k=-1, mode="max")
    trainer = quick_trainer(
        max_epochs=EPOCHS,
        max_steps=-1,
        limit_val_batches=1,
        callbacks=[seen, steps, epochs, validated],
        enable_checkpointing=True,
    )
    trainer.fit(model, datamodule, ckpt_path=ckpt)
    return seen.batches


@pytest.mark.parametrize(
    ("workers", "data"),
    [(0, {}), (2, {}), (0, {"batched_augmentation": True, "images_on_device": True})],
    ids=["main-process", "2-workers", "images-on-device"],
)
def test_resume_sees_the_batches_of_the_uninterrupted_run(tmp_path, workers, data):
    straight = _fit(tmp_path / "straight", workers, **data)
    assert len(straight) == STEPS
    assert len({i for b in straight[:8] for i in b}) == IMAGES  # one epoch = every image
    mid_epoch = _fit(tmp_path / "a", workers, tmp_path / "straight" / "step=3.ckpt", **data)
    assert mid_epoch == straight[3:]
    for name in ("end-epoch=0.ckpt", "val-epoch=0.ckpt", "step=12.ckpt"):
        resumed = _fit(tmp_path / name, workers, tmp_path / "straight" / name, **data)
        start = 12 if name.startswith("step") else 8
        assert resumed == straight[start:], name


def _loader(workers: int, epoch: int):
    datamodule = _Numbered("unused", batch_size=BATCH, num_workers=workers, augmentation="simclr")
    loader = datamodule.train_dataloader()
    loader.sampler.position = lambda: (epoch, 0, IMAGES)
    return loader


def _views(workers: int, epoch: int) -> list[torch.Tensor]:
    return [torch.stack(views) for views, _ in _loader(workers, epoch)]


def test_views_are_a_function_of_seed_epoch_and_index():
    """The same views with 0 or 2 worker processes and whatever torch's global random state;
    other views in another epoch; the caller's random state untouched (0 workers)."""
    torch.manual_seed(1)
    state = torch.get_rng_state()
    _loader(0, epoch=1).dataset[1, 5]  # in the training process with num_workers=0
    assert torch.equal(torch.get_rng_state(), state)
    in_process = _views(0, epoch=1)
    torch.manual_seed(2)
    with_workers = _views(2, epoch=1)
    assert len(in_process) == IMAGES // BATCH
    for a, b in zip(in_process, with_workers, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(_views(0, epoch=2)[0], in_process[0])
