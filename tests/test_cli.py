"""The command line: every shipped config runs, links data values, rejects bad keys, resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lightning_ssl.cli import run_cli
from tests.cli_run import lightning_ssl_in_process, lightning_ssl_subprocess
from tests.shallow_vit import shallow_backbone_args, smoke_image_size

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def _data_args(config: Path, data_root: Path) -> list[str]:
    data = yaml.safe_load(config.read_text())["data"]["class_path"]
    if data.endswith("ImageFolderDataModule"):
        return [
            f"--data.init_args.data_dir={data_root / 'imagewoof2-160'}",
            # 32 px: a quarter of the convolutions of 64 px; the ImageNet stems still fit.
            f"--data.init_args.image_size={smoke_image_size(config)}",
            "--data.init_args.batch_size=4",
        ] + (["--data.init_args.local_size=16"] if "num_local_crops" in config.read_text() else [])
    if data.endswith("ImageTextDataModule"):  # class-name captions of the CIFAR-10 images
        return [
            f"--data.init_args.data_dir={data_root / 'cifar10-jpeg'}",
            "--data.init_args.val_dir=test",
            "--data.init_args.num_classes=10",
            "--data.init_args.class_names=null",
            f"--data.init_args.image_size={smoke_image_size(config)}",
            "--data.init_args.batch_size=8",
        ]
    if data.endswith("FashionMNISTDataModule"):
        return [f"--data.init_args.data_dir={data_root / 'fashion-mnist'}"]
    return [
        f"--data.init_args.data_dir={data_root / 'cifar10-jpeg'}",
        "--data.init_args.batch_size=4",
    ]


def _small_model_args(config: Path) -> list[str]:
    """Shrink 65k/8k-wide heads so that a CPU step takes seconds; the code path is unchanged."""
    text = config.read_text()
    shrink = {
        "out_dim": 256,
        "proj_hidden_dim": 256,
        "proj_dim": 64,
        "pred_hidden_dim": 256,
        "num_prototypes": 100,
        "queue_size": 256,
        "hidden_dim": 256,
        "embed_dim": 64,  # CLIP: joint space and a 1-block text tower
        "text_width": 64,
        "text_layers": 1,
        "text_heads": 1,
    }
    small = [f"--model.init_args.{k}={v}" for k, v in shrink.items() if f" {k}:" in text]
    return small + shallow_backbone_args(config)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_config_runs_fast_dev_run(config, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # One training step and one validation batch run every hook of the config's model, data,
    # callbacks and logger; the steps after the first are the methods' own tests' subject.
    run_cli(
        [
            "fit",
            f"--config={config}",
            "--trainer.fast_dev_run=1",
            "--trainer.precision=32",
            "--trainer.accelerator=cpu",
            "--data.init_args.num_workers=0",
            *_data_args(config, data_root),
            *_small_model_args(config),
        ]
    )
    # A smoke run must never write (or overwrite) a real run's last.ckpt.
    assert not list(tmp_path.rglob("*.ckpt"))


def test_data_values_are_linked_into_the_model(cifar10_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "fit",
            # A config on an augmentation preset: explicit views refuse num_local_crops.
            f"--config={REPO / 'configs/dino/cifar10.yaml'}",
            "--trainer.fast_dev_run=1",
            "--trainer.precision=32",
            "--trainer.accelerator=cpu",
            f"--data.init_args.data_dir={cifar10_dir}",
            "--data.init_args.batch_size=8",
            "--data.init_args.num_workers=0",
            "--data.init_args.num_local_crops=2",
            "--data.init_args.local_size=16",
            *_small_model_args(REPO / "configs/dino/cifar10.yaml"),
        ]
    )
    hp = cli.model.hparams
    assert (hp.num_classes, hp.image_size, hp.num_global_crops, hp.num_local_crops) == (
        10,
        32,
        2,
        2,
    )


# The error-message tests run the console script's main in this process (the same parser and
# messages; a fresh process per message cost ~8 s of imports); ``--help`` runs in a fresh one.
_cli = lightning_ssl_in_process


def test_config_mistakes_print_the_real_error_in_one_line(tmp_path):
    """Issue 11: the error first, in one line, with the key and a close match; no usage block."""
    config = str(REPO / "configs/simclr/cifar10.yaml")
    expected = {
        "--model.init_args.temperatur=0.2": "--model.init_args.temperatur: unknown option of "
        "SimCLR; did you mean 'temperature'?",
        "--model.init_args.temperature=hot": "--model.init_args.temperature: expected float, "
        "got 'hot'",
        "--trainer.max_epoks=3": "--trainer.max_epoks: unknown option; did you mean "
        "'--trainer.max_epochs'?",
    }
    for mistake, message in expected.items():
        out = _cli("fit", f"--config={config}", mistake, cwd=tmp_path)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and lines[0] == f"lightning-ssl fit: error: {message}", lines
        assert len(lines) == 2 and "usage" not in out.stderr, lines


def test_data_errors_name_the_cli_flag_without_a_traceback(tmp_path):
    out = _cli(
        "fit",
        f"--config={REPO / 'configs/simclr/quickstart.yaml'}",
        f"--data.init_args.data_dir={tmp_path / 'missing'}",
        cwd=tmp_path,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = [ln for ln in out.stderr.splitlines() if "data error" in ln]
    assert str(tmp_path / "missing") in line and "--data.init_args.data_dir" in line
    assert "download=True" not in out.stderr


def test_help_lists_every_command_and_run_folder_errors_are_one_line(tmp_path):
    out = lightning_ssl_subprocess("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("fit", "validate", "test", "predict", "compare", "grid", "export"):
        assert f"\n  {command} " in out.stdout, command
    config = str(REPO / "configs/simclr/quickstart.yaml")
    out = _cli("fit", f"--config={config}", "--run_dir=runs/none", "--ckpt_path=last", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("lightning-ssl fit: error: --ckpt_path")


def test_print_config_is_complete(tmp_path):
    out = _cli(
        "fit", f"--config={REPO / 'configs/simclr/cifar10.yaml'}", "--print_config", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    init = printed["model"]["init_args"]
    assert init["temperature"] == 0.2 and init["optimizer"] == "lars" and "warmup_epochs" in init
    assert printed["data"]["init_args"]["augmentation"] == "simclr"


def test_fit_then_resume_from_last_then_validate_and_test(cifar10_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [
        f"--config={REPO / 'configs/simclr/cifar10.yaml'}",
        "--trainer.precision=32",
        "--trainer.accelerator=cpu",
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=0",
        "--data.init_args.train_subset=64",
        "--data.init_args.val_subset=32",
        "--model.init_args.proj_hidden_dim=64",
        # The run folder, resume and logs are the subject: a tiny backbone (the stem's 32 px
        # ResNet-18 was most of this test's time).
        "--model.init_args.backbone=timm:test_resnet",
        "--model.init_args.cifar_stem=false",
    ]
    run_cli(["fit", *common, "--trainer.max_epochs=1"])
    (last,) = (tmp_path / "runs/simclr-cifar10/checkpoints").iterdir()  # one checkpoint
    assert last.name == "last.ckpt"
    assert last.exists()
    assert torch.load(last, weights_only=False)["global_step"] == 4
    cli = run_cli(["fit", *common, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert cli.trainer.global_step == 8
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 8
    assert any("OnlineLinearProbe" in key for key in ckpt["callbacks"])
    cli = run_cli(["validate", *common, f"--ckpt_path={last}"])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/probe_top1"]) <= 1.0
    cli = run_cli(["test", *common, f"--ckpt_path={last}"])
    assert "test/probe_top1" in cli.trainer.callback_metrics
    # Logged to CSV (with the saved config) and to an offline W&B run grouped by method: the
    # training history in csv/ (one version per process), validate/test beside it.
    root = tmp_path / "runs/simclr-cifar10"
    metrics = sorted((root / "csv").glob("version_*/metrics.csv"))
    assert [m.parent.name for m in metrics] == ["version_0", "version_1"]
    assert "val/knn_top1" in metrics[0].read_text().splitlines()[0]
    assert (metrics[0].parent / "config.yaml").exists()
    for subcommand in ("validate", "test"):
        assert (root / f"evaluations/{subcommand}/version_0/metrics.csv").is_file()
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, "the resumed process continues the W&B run in a second segment"
