"""Linear evaluation: any checkpoint loads as is, the encoder stays frozen, a head learns.

Checkpoints are made here by a Lightning Trainer (one pretraining step on synthetic views) or by
the CLI; evaluation data are real CIFAR-10 / Imagewoof images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_ssl.cli import run_cli
from lightning_ssl.data import CIFAR10DataModule
from lightning_ssl.eval.linear import LinearEvaluation
from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.methods import DINO, SimCLR, SSLMethod
from tests.methods.helpers import SMALL_HEADS, SyntheticViews, quick_trainer

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def pretrain(cls: type[SSLMethod], path: Path, backbone: str = "timm:test_resnet") -> Path:
    """A checkpoint of ``cls`` after one optimizer step (large LR: the student moves away from
    an EMA teacher) saved by a Lightning Trainer."""
    data = SyntheticViews(image_size=32, batch_size=8, n=16)
    heads = SMALL_HEADS[cls.__name__]
    method = cls(backbone=backbone, lr=2.0, warmup_epochs=0, **heads, **data.link())
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(method, datamodule=data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    return {cls.__name__: pretrain(cls, root / f"{cls.__name__}.ckpt") for cls in (SimCLR, DINO)}


def _cifar(cifar10_dir: Path, **kwargs) -> CIFAR10DataModule:
    return CIFAR10DataModule(str(cifar10_dir), num_workers=0, **kwargs)


@pytest.mark.parametrize(
    "name, prefix",
    [("SimCLR", "backbone.model."), ("DINO", "teacher.backbone.model.")],
)
def test_any_method_loads_without_key_surgery_and_the_encoder_stays_frozen(
    name, prefix, checkpoints, cifar10_dir
):
    ckpt = checkpoints[name]
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model = LinearEvaluation(str(ckpt), lr=0.5, lr_scaling="none", batch_norm=True, num_classes=10)
    # The encoder is the saved module extract_features uses (DINO: the EMA teacher), as saved.
    encoder = {k: v.clone() for k, v in model.encoder.model.state_dict().items()}
    assert encoder.keys() == {k[len(prefix) :] for k in saved if k.startswith(prefix)}
    assert all(torch.equal(v, saved[prefix + k]) for k, v in encoder.items())
    if name == "DINO":  # the student differs, so picking the teacher is not a coincidence
        assert not all(torch.equal(v, saved["backbone.model." + k]) for k, v in encoder.items())
    images = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(
        model.encoder(images), load_pretrained(ckpt).extract_features(images), rtol=0, atol=0
    )

    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    data = _cifar(cifar10_dir, batch_size=8, train_subset=24, val_subset=8)
    quick_trainer(max_steps=3).fit(model, model.wrap_datamodule(data))

    # Weights and BatchNorm statistics bitwise unchanged; the head (and its BN) trained.
    after = model.encoder.model.state_dict()
    assert all(torch.equal(after[k].cpu(), v) for k, v in encoder.items())
    assert not model.encoder.training and all(p.grad is None for p in model.encoder.parameters())
    assert not torch.equal(model.head.state_dict()["1.weight"], head["1.weight"])
    assert not torch.equal(model.head.state_dict()["0.running_mean"], head["0.running_mean"])


def test_head_learns_on_real_cifar10_features_with_the_feature_cache(checkpoints, cifar10_dir):
    model = LinearEvaluation(
        str(checkpoints["SimCLR"]),
        lr=0.5,
        lr_scaling="none",
        batch_norm=True,
        augment=False,
        cache_features=True,
        num_classes=10,
    )
    data = _cifar(cifar10_dir, batch_size=100, train_subset=1000, val_subset=500)
    trainer = quick_trainer(max_steps=-1, max_epochs=20, check_val_every_n_epoch=20)
    trainer.fit(model, model.wrap_datamodule(data))
    # The cache holds the encoder's features of the training split, in order.
    images, _ = next(iter(data.train_eval_dataloader()))
    torch.testing.assert_close(model._cache[:100], model.encoder(images), rtol=1e-5, atol=1e-5)
    top1 = float(trainer.callback_metrics["val/top1"])
    # Chance is 0.10 (500 images: std 0.013); frozen random-ish features still separate classes.
    assert top1 > 0.2, top1
    assert float(trainer.callback_metrics["val/top5"]) > top1


def test_cache_features_refuses_augmentation(checkpoints):
    with pytest.raises(ValueError, match="augment=False"):
        LinearEvaluation(str(checkpoints["SimCLR"]), augment=True, cache_features=True)


def _data_args(config: Path, data_root: Path) -> list[str]:
    if "imagenet" in config.stem:
        return [
            f"--data.init_args.data_dir={data_root / 'imagewoof2-160'}",
            "--data.init_args.image_size=64",
            "--data.init_args.batch_size=4",
        ]
    return [
        f"--data.init_args.data_dir={data_root / 'cifar10-jpeg'}",
        "--data.init_args.batch_size=8",
    ]


@pytest.mark.parametrize(
    "config", sorted((REPO / "configs/eval/linear").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_linear_config_runs(config, checkpoints, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "fit",
            f"--config={config}",
            f"--model.init_args.pretrained={checkpoints['SimCLR']}",
            "--trainer.fast_dev_run=2",
            "--trainer.precision=32",
            "--trainer.accelerator=cpu",
            "--data.init_args.num_workers=0",
            *_data_args(config, data_root),
        ]
    )
    assert 0.0 <= float(cli.trainer.callback_metrics["val/top1"]) <= 1.0
    assert cli.model.hparams.num_classes == 10  # linked from the data


def test_cli_pretrains_then_evaluates_linearly(cifar10_dir, tmp_path, monkeypatch):
    """A checkpoint written by the CLI (``_class_path`` hyperparameters) loads as is."""
    monkeypatch.chdir(tmp_path)
    data = [
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=8",
        "--data.init_args.train_subset=16",
        "--data.init_args.val_subset=8",
        "--trainer.precision=32",
        "--trainer.accelerator=cpu",
    ]
    run_cli(
        [
            "fit",
            f"--config={REPO / 'configs/byol/cifar10.yaml'}",
            "--model.init_args.backbone=timm:test_resnet",
            "--model.init_args.cifar_stem=false",
            "--model.init_args.proj_hidden_dim=32",
            "--model.init_args.pred_hidden_dim=32",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            *data,
        ]
    )
    pretrained = tmp_path / "runs/byol-cifar10/checkpoints/last.ckpt"
    assert "_class_path" in torch.load(pretrained, weights_only=False)["hyper_parameters"]
    cli = run_cli(
        [
            "fit",
            f"--config={REPO / 'configs/eval/linear/cifar10.yaml'}",
            f"--model.init_args.pretrained={pretrained}",
            "--trainer.max_epochs=1",
            *data,
        ]
    )
    assert cli.trainer.global_step == 2  # 16 images, batch 8
    last = torch.load(tmp_path / "runs/linear-cifar10/checkpoints/last.ckpt", weights_only=False)
    assert last["hyper_parameters"]["pretrained"] == str(pretrained)
    assert 0.0 <= float(cli.trainer.callback_metrics["val/top1"]) <= 1.0
