"""Offline kNN evaluation: the same accuracy as a direct ``knn_predict`` on the same features,
a feature bank gathered in dataset order across processes, and the shipped configs run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_ssl import distributed
from lightning_ssl.cli import run_cli
from lightning_ssl.data import CIFAR10DataModule
from lightning_ssl.eval.data import encode_dataset
from lightning_ssl.eval.knn_eval import KNNEvaluation
from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.methods import BYOL
from lightning_ssl.nn.knn import knn_predict
from tests.methods.helpers import SyntheticViews, quick_trainer

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A BYOL checkpoint (EMA teacher) after one step, saved by a Lightning Trainer."""
    data = SyntheticViews(image_size=32, batch_size=8, n=16)
    small = dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32)
    method = BYOL(backbone="timm:test_resnet", **small, **data.link())
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(method, datamodule=data)
    path = tmp_path_factory.mktemp("pretrained") / "byol.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_knn_evaluation_equals_direct_knn_predict_on_real_images(checkpoint, cifar10_dir):
    data = CIFAR10DataModule(
        str(cifar10_dir), batch_size=50, num_workers=0, train_subset=400, val_subset=150
    )
    # A chunk smaller than the bank: the running top-k over chunks is exercised.
    model = KNNEvaluation(str(checkpoint), k=20, temperature=0.07, chunk_size=64, num_classes=10)
    metrics = quick_trainer(limit_val_batches=None).validate(model, datamodule=data)[0]

    method = load_pretrained(checkpoint)
    with torch.no_grad():

        def encode(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = [(method.extract_features(x), y) for x, y in loader]
            return F.normalize(torch.cat([f for f, _ in pairs]), dim=1), torch.cat(
                [y for _, y in pairs]
            )

        bank, bank_labels = encode(data.train_eval_dataloader())
        query, labels = encode(data.val_dataloader())
    assert len(bank) == 400 and len(query) == 150
    scores = knn_predict(query, bank, bank_labels, 10, k=20, temperature=0.07)
    top5 = scores.topk(5, dim=1).indices
    expected_top1 = (top5[:, 0] == labels).float().mean().item()
    expected_top5 = (top5 == labels[:, None]).any(dim=1).float().mean().item()
    assert metrics["knn/top1"] == pytest.approx(expected_top1, abs=1e-6)
    assert metrics["knn/top5"] == pytest.approx(expected_top5, abs=1e-6)


def test_bank_is_gathered_in_dataset_order_across_processes(monkeypatch):
    """Two ranks simulated in turn: rank 1 encodes its shard (every 2nd item from 1), rank 0
    gathers ``[shard 0, shard 1]`` as ``all_gather`` would; 7 items make the shards uneven."""
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(7, 3, 2, 2, generator=g), torch.arange(7)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    loader = DataLoader(TensorDataset(images, labels), batch_size=2)
    rank1_parts: list[torch.Tensor] = []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)

    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(
        distributed, "gather_no_grad", lambda x: rank1_parts.append(x) or torch.cat([x, x])
    )
    encode_dataset(encoder, loader, torch.device("cpu"), normalize=True)

    parts = iter(rank1_parts)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "gather_no_grad", lambda x: torch.cat([x, next(parts)]))
    features, bank_labels = encode_dataset(encoder, loader, torch.device("cpu"), normalize=True)

    with torch.no_grad():
        torch.testing.assert_close(features, F.normalize(encoder(images), dim=1))
    assert torch.equal(bank_labels, labels)
    assert [len(p) for p in rank1_parts] == [4, 4]  # 3 items + 1 padding row (label -1)
    assert rank1_parts[1][-1] == -1


def _data_args(config: Path, data_root: Path) -> list[str]:
    if "imagenet" in config.stem:
        folder = data_root / "imagewoof2-160"
        return [f"--data.init_args.data_dir={folder}", "--data.init_args.image_size=64"]
    return [f"--data.init_args.data_dir={data_root / 'cifar10-jpeg'}"]


@pytest.mark.parametrize(
    "config", sorted((REPO / "configs/eval/knn").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_knn_configs_validate(config, checkpoint, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "validate",
            f"--config={config}",
            f"--model.init_args.pretrained={checkpoint}",
            "--trainer.precision=32",
            "--trainer.accelerator=cpu",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=16",
            "--data.init_args.train_subset=48",
            "--data.init_args.val_subset=16",
            *_data_args(config, data_root),
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["knn/top1"]) <= float(metrics["knn/top5"]) <= 1.0
    assert cli.model.hparams.k == (20 if "imagenet" in config.stem else 200)
    assert (tmp_path / cli.trainer.default_root_dir).is_dir()
