"""Pretrained starts load exactly the saved weights (files made here: nothing is downloaded), and
ViTs of any timm family take crops of other sizes because the model, not its name, says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from torch import nn

from lightning_ssl.cli import run_cli
from lightning_ssl.methods import SimCLR
from lightning_ssl.nn import Backbone

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def features(model: nn.Module, images: torch.Tensor = IMAGES) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def cached_torchvision_weights(monkeypatch, tmp_path: Path, enum_name: str) -> nn.Module:
    """A random ResNet-18 saved where torch hub looks for ``enum_name``'s download (classifier
    included, as torchvision's file): ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    url = torchvision.models.get_weight(enum_name).url
    cache = tmp_path / "torch_home/hub/checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    reference.fc = nn.Identity()
    return reference


def test_torchvision_weights_enum_gives_the_saved_features(monkeypatch, tmp_path):
    reference = cached_torchvision_weights(monkeypatch, tmp_path, "ResNet18_Weights.IMAGENET1K_V1")
    torch.manual_seed(2)
    random_start = Backbone("resnet18")
    assert not torch.allclose(features(random_start), features(reference))
    for spec in ("ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1", True):  # True: DEFAULT
        net = Backbone("resnet18", pretrained=spec)
        torch.testing.assert_close(features(net), features(reference), rtol=0, atol=0)


def test_cifar_stem_keeps_its_random_3x3_conv_and_loads_the_rest(monkeypatch, tmp_path):
    reference = cached_torchvision_weights(monkeypatch, tmp_path, "ResNet18_Weights.IMAGENET1K_V1")
    with pytest.warns(UserWarning, match=r"conv1.weight \(64, 3, 7, 7\) does not fit the CIFAR"):
        net = Backbone("resnet18", cifar_stem=True, pretrained="IMAGENET1K_V1")
    assert net.model.conv1.weight.shape == (64, 3, 3, 3)
    loaded = {k: v for k, v in net.model.state_dict().items() if k != "conv1.weight"}
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.items())


def test_timm_pretrained_config_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    reference = timm.create_model("test_resnet", num_classes=10)  # a file with its classifier
    safetensors.torch.save_file(reference.state_dict(), tmp_path / "weights.safetensors")
    reference.reset_classifier(0)
    overlay = {"file": str(tmp_path / "weights.safetensors")}
    net = Backbone("timm:test_resnet", pretrained=True, pretrained_cfg_overlay=overlay)
    torch.testing.assert_close(features(net), features(reference), rtol=0, atol=0)
    # the same file by path (loaded strictly by lightning-ssl, the classifier dropped)
    by_path = Backbone("timm:test_resnet", pretrained=str(tmp_path / "weights.safetensors"))
    torch.testing.assert_close(features(by_path), features(reference), rtol=0, atol=0)


def test_every_method_takes_pretrained_through_backbone_kwargs(tmp_path):
    torch.manual_seed(4)
    reference = Backbone("resnet18", cifar_stem=True)
    torch.save(reference.model.state_dict(), tmp_path / "start.pt")
    method = SimCLR(
        backbone="resnet18", cifar_stem=True, image_size=32,
        backbone_kwargs={"pretrained": str(tmp_path / "start.pt")},
    )
    torch.testing.assert_close(features(method), features(reference), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("pretrained", "message"),
    [
        ("missing.safetensors", "pretrained weights file '.*missing.safetensors' not found"),
        ("cifar.pt", r"do not fit ResNet: shape conv1.weight \(64, 3, 3, 3\) in the file vs "
         r"\(64, 3, 7, 7\)"),
        ("ResNet50_Weights.IMAGENET1K_V1", "is no weights of resnet18: choose one of"),
    ],
)
def test_a_wrong_start_is_a_one_line_error(tmp_path, monkeypatch, pretrained, message):
    monkeypatch.chdir(tmp_path)
    # a CIFAR-stem export's conv1 is 3x3: it does not fit an ImageNet stem (only the reverse,
    # ImageNet weights into a CIFAR stem, skips the stem)
    torch.save(Backbone("resnet18", cifar_stem=True).model.state_dict(), "cifar.pt")
    with pytest.raises(ValueError, match=message) as error:
        Backbone("resnet18", pretrained=pretrained)
    assert "\n" not in str(error.value)


def test_torchvision_weights_name_on_a_timm_model_is_an_error():
    with pytest.raises(ValueError, match="weights name but 'timm:test_resnet' is a timm"):
        Backbone("timm:test_resnet", pretrained="ResNet18_Weights.IMAGENET1K_V1")


@pytest.mark.parametrize(
    ("name", "global_size", "kwargs"),
    [
        ("eva02_tiny_patch14_224", 224, {"depth": 1}),  # patch 14: the 96 px crop is padded
        ("deit3_small_patch16_224", 128, {"depth": 1, "embed_dim": 96, "num_heads": 2}),
        ("flexivit_small", 128, {"depth": 1, "embed_dim": 96, "num_heads": 2}),
    ],
)
def test_any_timm_vit_family_takes_global_and_local_crops(name, global_size, kwargs):
    net = Backbone(name, image_size=global_size, **kwargs)
    assert net.model.patch_embed.img_size == (global_size, global_size)
    for size in (global_size, 96):
        assert net(torch.zeros(2, 3, size, size)).shape == (2, net.dim)


def test_shipped_config_takes_a_pretrained_start_on_the_command_line(
    cifar10_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(5)
    reference = Backbone("resnet18", cifar_stem=True)
    safetensors.torch.save_file(reference.model.state_dict(), tmp_path / "start.safetensors")
    cli = run_cli(
        [
            "validate",
            f"--config={Path(__file__).parents[2] / 'configs/simclr/cifar10.yaml'}",
            "--model.init_args.backbone_kwargs={pretrained: start.safetensors}",
            "--trainer.fast_dev_run=1",
            "--trainer.accelerator=cpu",
            f"--data.init_args.data_dir={cifar10_dir}",
            "--data.init_args.batch_size=8",
            "--data.init_args.num_workers=0",
        ]
    )
    loaded = cli.model.backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.model.state_dict().items())
    # the config's channels_last convolutions sum in another order: float32 tolerance
    torch.testing.assert_close(features(cli.model), features(reference))
