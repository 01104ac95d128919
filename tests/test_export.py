"""Backbone export: the files load into torchvision and timm with the documented one-liners and
give the method's own evaluation features."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from torch import nn

from lightning_ssl.commands import main
from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.export import export_backbone
from lightning_ssl.methods import DINO, SimCLR, SSLMethod
from tests.methods.helpers import SMALL_HEADS, SyntheticViews, quick_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def pretrain(cls: type[SSLMethod], path: Path, **backbone) -> Path:
    """``cls`` after one optimizer step (large LR: an EMA teacher lags the student)."""
    data = SyntheticViews(image_size=32, batch_size=4, n=4)
    method = cls(lr=2.0, warmup_epochs=0, **backbone, **SMALL_HEADS[cls.__name__], **data.link())
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(method, datamodule=data)
    trainer.save_checkpoint(path)
    return path


def _cifar_stem(model: nn.Module) -> nn.Module:
    """The stem rebuild the export docstring documents for ``cifar_stem: true``."""
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


@pytest.mark.parametrize("cls", [SimCLR, DINO], ids=lambda c: c.__name__)
def test_export_loads_into_torchvision_and_timm_with_the_same_features(cls, tmp_path):
    ckpt = pretrain(cls, tmp_path / "method.ckpt", backbone="resnet18", cifar_stem=True)
    meta = export_backbone(ckpt, tmp_path / "out/backbone.pt")  # the suffix is dropped
    sidecar = json.loads((tmp_path / "out/backbone.json").read_text())
    assert sidecar == {k: v for k, v in meta.items() if k != "files"}
    assert sidecar["arch"] == "resnet18" and sidecar["format"] == "torchvision"
    assert sidecar["cifar_stem"] is True and sidecar["feature_dim"] == 512
    assert sidecar["method"] == cls.__name__ and sidecar["checkpoint"] == str(ckpt.resolve())

    state = torch.load(tmp_path / "out/backbone.pt")
    tv = _cifar_stem(torchvision.models.resnet18())
    result = tv.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    tv.fc = nn.Identity()  # the one-liner: strict once the classifier is removed
    tv.load_state_dict(state)

    tm = _cifar_stem(timm.create_model("resnet18", num_classes=0))
    tm.load_state_dict(safetensors.torch.load_file(tmp_path / "out/backbone.safetensors"))

    method = load_pretrained(ckpt)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = method.extract_features(images)  # DINO: the teacher's features
        torch.testing.assert_close(tv.eval()(images), expected)
        torch.testing.assert_close(tm.eval()(images), expected)
        if cls is DINO:  # the student's differ: the exported backbone is the evaluated one
            assert not torch.allclose(method.backbone(images), expected)


def test_timm_backbone_exports_with_timm_keys_only(tmp_path):
    ckpt = pretrain(SimCLR, tmp_path / "simclr.ckpt", backbone="timm:test_resnet")
    with pytest.raises(ValueError, match="format='timm'"):
        export_backbone(ckpt, tmp_path / "tv", format="torchvision")
    meta = export_backbone(ckpt, tmp_path / "bb")
    assert (meta["arch"], meta["format"], meta["cifar_stem"]) == ("test_resnet", "timm", False)
    model = timm.create_model("test_resnet", num_classes=0)
    model.load_state_dict(safetensors.torch.load_file(tmp_path / "bb.safetensors"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = load_pretrained(ckpt).extract_features(images)
        torch.testing.assert_close(model.eval()(images), expected)


def test_lightning_ssl_export_command(tmp_path, capsys):
    ckpt = pretrain(SimCLR, tmp_path / "simclr.ckpt", backbone="timm:test_resnet")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpt), str(tmp_path / "exported"), "--format", "timm"])
    assert exit_info.value.code == 0
    assert all((tmp_path / f"exported.{ext}").is_file() for ext in ("pt", "safetensors", "json"))
    assert "SimCLR test_resnet backbone (timm keys" in capsys.readouterr().out


@pytest.mark.parametrize("backbone", ["resnet18", "timm:test_vit"])
def test_timm_hub_layout_loads_offline_with_local_dir(backbone, tmp_path):
    ckpt = pretrain(SimCLR, tmp_path / "method.ckpt", backbone=backbone)
    meta = export_backbone(ckpt, tmp_path / "hub", format="timm-hub")
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert json.loads((tmp_path / "hub/config.json").read_text())["num_classes"] == 0
    model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = load_pretrained(ckpt).extract_features(images)
        torch.testing.assert_close(model.eval()(images), expected)
    assert meta["files"]["weights"] == str(tmp_path / "hub/model.safetensors")


def test_exported_files_have_ordinary_permissions(tmp_path):
    ckpt = pretrain(SimCLR, tmp_path / "method.ckpt", backbone="timm:test_resnet")
    old = os.umask(0o022)
    try:
        files = export_backbone(ckpt, tmp_path / "bb")["files"]
        files.update(export_backbone(ckpt, tmp_path / "hub", format="timm-hub")["files"])
    finally:
        os.umask(old)
    assert {f: oct(os.stat(f).st_mode & 0o777) for f in files.values()} == {
        f: "0o644" for f in files.values()
    }


@pytest.mark.parametrize(
    ("backbone", "format", "message"),
    [
        ({"backbone": "resnet18", "cifar_stem": True}, "timm-hub", "cannot hold a CIFAR stem"),
        ({"backbone": "timm:test_resnet"}, "torchvision", "test_resnet is a timm model"),
    ],
)
def test_a_format_that_does_not_apply_is_a_one_line_error(
    tmp_path, capsys, backbone, format, message
):
    ckpt = pretrain(SimCLR, tmp_path / "method.ckpt", **backbone)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpt), str(tmp_path / "out"), "--format", format])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("lightning-ssl export: error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_a_run_starts_from_an_export_and_reloads_once_the_start_file_is_gone(tmp_path):
    first = pretrain(SimCLR, tmp_path / "first.ckpt", backbone="resnet18", cifar_stem=True)
    export_backbone(first, tmp_path / "first")
    start = {"pretrained": str(tmp_path / "first.safetensors")}
    method = SimCLR(backbone="resnet18", cifar_stem=True, image_size=32, backbone_kwargs=start)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # before any step: exactly the exported run's evaluation features
        expected = load_pretrained(first).extract_features(images)
        torch.testing.assert_close(method.eval()(images), expected, rtol=0, atol=0)
    second = pretrain(
        SimCLR, tmp_path / "second.ckpt", backbone="resnet18", cifar_stem=True,
        backbone_kwargs=start,
    )
    (tmp_path / "first.safetensors").unlink()  # load_from_checkpoint does not read it again
    assert export_backbone(second, tmp_path / "second")["backbone_kwargs"] == start
