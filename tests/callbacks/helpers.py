"""A feature-only LightningModule and a DataModule of separable clusters, for callback tests."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class IdentityBackbone(nn.Identity):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim


class FeatureModule(L.LightningModule):
    """Its 'backbone' is the identity: the probe and kNN see the data's own features."""

    def __init__(self, dim: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.backbone = IdentityBackbone(dim)
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def extract_features(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        views, _ = batch
        return {"loss": self.dummy.sum() * 0, "features": torch.cat(views[:2]).detach()}

    def validation_step(self, batch, batch_idx):
        return {"features": self.backbone(batch[0])}

    def test_step(self, batch, batch_idx):
        return {"features": self.backbone(batch[0])}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def clusters(n: int, dim: int, num_classes: int, seed: int, noise: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 2
    labels = torch.arange(num_classes).repeat(n // num_classes)
    return centers[labels] + noise * torch.randn(len(labels), dim, generator=g), labels


class _Views(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return [self.x[i], self.x[i] + 0.1], self.y[i]


class ClusterData(L.LightningDataModule):
    def __init__(
        self,
        dim: int = 16,
        num_classes: int = 4,
        n: int = 400,
        batch_size: int = 32,
        noise: float = 0.5,
    ):
        super().__init__()
        self.num_classes, self.batch_size = num_classes, batch_size
        self.train = clusters(n, dim, num_classes, seed=0, noise=noise)
        self.val = clusters(n // 2, dim, num_classes, seed=1, noise=noise)

    def train_dataloader(self):
        return DataLoader(
            _Views(*self.train), batch_size=self.batch_size, shuffle=True, drop_last=True
        )

    def train_eval_dataloader(self):
        return DataLoader(TensorDataset(*self.train), batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*self.val), batch_size=self.batch_size)

    def test_dataloader(self):
        return self.val_dataloader()


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})
