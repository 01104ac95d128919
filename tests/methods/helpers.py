"""Synthetic multi-crop data and a quick CPU Trainer for method tests (no real images)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

#: Narrow heads for checkpoints made in tests, by method class name.
SMALL_HEADS = {
    "SimCLR": dict(proj_hidden_dim=32, proj_dim=16),
    "DINO": dict(out_dim=64, hidden_dim=32, bottleneck_dim=16),
}


class _RandomViews(Dataset):
    def __init__(
        self,
        n: int,
        sizes: list[int],
        num_classes: int,
        seed: int,
        caption_tokens: int = 0,
        sample_indices: bool = False,
    ) -> None:
        self.sample_indices = sample_indices
        g = torch.Generator().manual_seed(seed)
        self.images = [torch.randn(n, 3, s, s, generator=g) for s in sizes]
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        # CLIP: random caption token ids ending in open_clip's end-of-text token (pooled there)
        self.tokens = torch.randint(1, 1000, (n, caption_tokens), generator=g)
        self.tokens[:, -1:] = 49407

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self.tokens.shape[1]:
            return [v[i] for v in self.images], self.labels[i], self.tokens[i]
        if self.sample_indices:  # InstDisc: each image's dataset index
            return [v[i] for v in self.images], self.labels[i], i
        return [v[i] for v in self.images], self.labels[i]


class SyntheticViews(L.LightningDataModule):
    """Random ``(views, labels)`` batches with the attributes the CLI links into a method
    (``(views, labels, tokens)`` with ``caption_tokens``: image-text pairs for CLIP)."""

    def __init__(
        self,
        image_size: int = 32,
        num_global_crops: int = 2,
        num_local_crops: int = 0,
        local_size: int = 16,
        batch_size: int = 8,
        n: int = 32,
        num_classes: int = 4,
        caption_tokens: int = 0,
        sample_indices: bool = False,
    ) -> None:
        super().__init__()
        self.image_size, self.num_classes, self.batch_size = image_size, num_classes, batch_size
        self.num_global_crops, self.num_local_crops = num_global_crops, num_local_crops
        sizes = [image_size] * num_global_crops + [local_size] * num_local_crops
        self.train = _RandomViews(
            n, sizes, num_classes, 0, caption_tokens=caption_tokens, sample_indices=sample_indices
        )
        g = torch.Generator().manual_seed(1)
        self.val = TensorDataset(
            torch.randn(n, 3, image_size, image_size, generator=g),
            torch.randint(0, num_classes, (n,), generator=g),
        )

    def link(self) -> dict:
        """The keyword arguments the CLI would link into the method."""
        return dict(
            num_classes=self.num_classes,
            image_size=self.image_size,
            num_global_crops=self.num_global_crops,
            num_local_crops=self.num_local_crops,
        )

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=self.batch_size)

    def train_eval_dataloader(self):
        return DataLoader(TensorDataset(self.train.images[0], self.train.labels), batch_size=8)


def quick_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer without logging, checkpoints or progress bar."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    return L.Trainer(**{**defaults, **kwargs})
