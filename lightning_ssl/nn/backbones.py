"""Backbones: torchvision ResNets (optionally with a CIFAR stem) and any timm model by name."""

from __future__ import annotations

from typing import Any

import timm
import torch
import torchvision
from torch import Tensor, nn

TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
)


class Backbone(nn.Module):
    """An image encoder that maps ``(B, 3, H, W)`` images to ``(B, dim)`` features.

    ``name`` selects a torchvision ResNet (``resnet18`` ... ``wide_resnet50_2``) or, otherwise
    (or with the prefix ``timm:``), any timm model, created with ``num_classes=0`` so that it ends
    in pooled features. ``dim`` is read from the model, never hard-coded.

    Args:
        name: model name, e.g. ``"resnet18"``, ``"resnet50"``, ``"vit_small_patch16_224"`` or
            ``"timm:resnet18"``.
        cifar_stem: replace a ResNet's 7x7/2 convolution and max-pool by a 3x3/1 convolution, the
            usual stem for 32 px images (SimCLR appendix B.9).
        image_size: input size for models that need it (ViTs); local crops of another size work
            because position embeddings are interpolated (timm's ``dynamic_img_size``).
        channels_last: keep convolution weights and inputs in NHWC memory format, which GPU
            convolutions with tensor cores run fastest (bf16/fp16); no effect on results.
        **kwargs: passed to the model constructor (e.g. ``drop_path_rate``).

    Example:
        >>> net = Backbone("resnet18", cifar_stem=True)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        name: str = "resnet18",
        cifar_stem: bool = False,
        image_size: int = 224,
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.name, self.channels_last = name, channels_last
        if name in TORCHVISION_RESNETS:
            self.model = _torchvision_resnet(name, cifar_stem, **kwargs)
        else:
            if cifar_stem:
                raise ValueError(
                    f"cifar_stem is only available for torchvision ResNets, not {name!r}"
                )
            self.model = _timm_model(name.removeprefix("timm:"), image_size, **kwargs)
        self.dim = _feature_dim(self.model)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def _torchvision_resnet(name: str, cifar_stem: bool, **kwargs: Any) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def _timm_model(name: str, image_size: int, **kwargs: Any) -> nn.Module:
    if "vit" in name or "deit" in name:
        kwargs = {"img_size": image_size, "dynamic_img_size": True, **kwargs}
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None:
        patch = int(patch_embed.patch_size[0])
        if image_size % patch:
            raise ValueError(
                f"{name}: patch size {patch} does not divide the crop size {image_size}"
            )
    return model


def _feature_dim(model: nn.Module) -> int:
    dim = getattr(model, "num_features", None)
    if isinstance(dim, int):
        return dim
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dim = model(torch.zeros(1, 3, 64, 64)).shape[-1]
    model.train(was_training)
    return int(dim)
