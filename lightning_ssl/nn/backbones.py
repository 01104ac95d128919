"""Backbones: torchvision ResNets (optionally with a CIFAR stem) and any timm model by name."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Literal

import timm
import torch
import torchvision
from torch import Tensor, nn

from lightning_ssl.nn.pretrained_weights import (
    Pretrained,
    is_weights_name,
    load_weights,
    pretrained_skipped,
    pretrained_source,
    read_state_dict,
    torchvision_state_dict,
    torchvision_weights,
)

TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
)

#: Normalisation of a convolutional backbone: ``batch`` (the libraries' BatchNorm) or ``layer``
#: (one group: each sample normalised over channels and positions, CPC v2's layer norm).
NormName = Literal["batch", "layer"]


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
        image_size: input size of models with a position embedding (any timm ViT: ``img_size``);
            local crops of another size work where the model supports ``dynamic_img_size``
            (then turned on: position embeddings are interpolated). Decided from the model, not
            its name.
        channels_last: keep convolution weights and inputs in NHWC memory format, which GPU
            convolutions with tensor cores run fastest (bf16/fp16); no effect on results.
        pretrained: the starting weights (default: random): a torchvision weights enum such as
            ``"ResNet18_Weights.IMAGENET1K_V1"``, ``True`` for the library's default weights
            (timm: with ``pretrained_cfg_overlay={"file": ...}`` a local file), or a
            ``.safetensors``/state-dict file such as ``lightning-ssl export`` writes. Loaded
            after the CIFAR stem replacement (see :mod:`lightning_ssl.nn.pretrained_weights`).
            Methods take it as ``backbone_kwargs: {pretrained: ...}``.
        norm: ``batch`` (the model's BatchNorm) or ``layer``: every BatchNorm becomes a
            ``GroupNorm`` with one group, which normalises each sample on its own (CPC v2's
            layer norm: no statistics shared between the images of a batch). For ResNets
            (torchvision's, or timm's through ``norm_layer="groupnorm1"``); not for ViTs.
        **kwargs: passed to the model constructor (e.g. ``drop_path_rate``).

    Examples:
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
        pretrained: Pretrained = None,
        norm: NormName = "batch",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.name, self.channels_last = name, channels_last
        if pretrained_skipped():  # the caller loads a checkpoint's weights next
            pretrained = None
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', got {norm!r}")
        if norm == "layer":  # timm's name; its GroupNorm1 has torchvision's GroupNorm keys
            kwargs["norm_layer"] = "groupnorm1"
        #: Constructor arguments of the library's model (what ``export`` records).
        self.model_kwargs: dict[str, Any] = dict(kwargs)
        if name in TORCHVISION_RESNETS:
            if norm == "layer":
                kwargs["norm_layer"] = functools.partial(nn.GroupNorm, 1)
            self.model = _torchvision_resnet(name, cifar_stem, **kwargs)
        else:
            if cifar_stem:
                raise ValueError(
                    f"cifar_stem is only available for torchvision ResNets, not {name!r}"
                )
            timm_name = name.removeprefix("timm:")
            self.model_kwargs = {**_input_size_kwargs(timm_name, image_size, kwargs), **kwargs}
            self.model = _timm_model(timm_name, image_size, pretrained, **self.model_kwargs)
            if norm == "layer" and hasattr(self.model, "patch_embed"):
                raise ValueError(
                    f"norm='layer' replaces the BatchNorm of convolutional backbones; {name!r} "
                    "is a ViT (already layer-normalised): leave norm at 'batch'"
                )
        if pretrained is not None and pretrained is not False:
            _load_pretrained(self.model, name, pretrained, cifar_stem)
        self.dim = feature_dim(self.model)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def _torchvision_resnet(name: str, cifar_stem: bool, **kwargs: Any) -> nn.Module:
    if "weights" in kwargs:
        raise ValueError(
            f"give {name}'s weights as pretrained: {kwargs['weights']!r}, not weights (they load "
            "after the CIFAR stem replacement)"
        )
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def _load_pretrained(model: nn.Module, name: str, pretrained: Pretrained, cifar_stem: bool) -> None:
    """Fill ``model`` (built, stem replaced) from ``pretrained``; timm's ``True`` is done."""
    source = pretrained_source(pretrained)
    if name in TORCHVISION_RESNETS and (pretrained is True or is_weights_name(pretrained)):
        state = torchvision_state_dict(torchvision_weights(name, pretrained))  # type: ignore[arg-type]
    elif is_weights_name(pretrained):
        raise ValueError(
            f"pretrained={source} is a torchvision weights name but {name!r} is a timm model: "
            "use pretrained: true (timm's weights) or a weights file"
        )
    elif pretrained is True:
        return  # timm.create_model(pretrained=True) loaded them
    else:
        state = read_state_dict(pretrained)  # type: ignore[arg-type]
    load_weights(model, state, source, cifar_stem)


def _timm_model(name: str, image_size: int, pretrained: Pretrained, **kwargs: Any) -> nn.Module:
    model = timm.create_model(name, pretrained=pretrained is True, num_classes=0, **kwargs)
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None:
        patch = int(patch_embed.patch_size[0])
        if image_size % patch:
            raise ValueError(
                f"{name}: patch size {patch} does not divide the crop size {image_size}"
            )
    return model


def _input_size_kwargs(name: str, image_size: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Input-size arguments the model takes, for models that embed patches (any timm ViT):
    ``img_size``, ``dynamic_img_size`` (position embeddings interpolated for other crop sizes)
    and ``dynamic_img_pad`` (crops the patch does not divide are padded bottom/right).

    Read from the model itself, built on the meta device (no memory, no weights), not its name.
    """
    probe_kwargs = {k: v for k, v in kwargs.items() if k != "pretrained_cfg_overlay"}
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False, num_classes=0, **probe_kwargs)
    except (TypeError, RuntimeError, NotImplementedError, AssertionError):
        return {}  # the real build below reports a bad name or argument
    if not hasattr(getattr(probe, "patch_embed", None), "img_size"):
        return {}
    accepted = inspect.signature(type(probe).__init__).parameters
    wanted = {"img_size": image_size, "dynamic_img_size": True, "dynamic_img_pad": True}
    return {k: v for k, v in wanted.items() if k in accepted}


def feature_dim(model: nn.Module, image_size: int = 64, attribute: str = "num_features") -> int:
    """The width of ``model``'s features: its integer ``attribute`` or, failing that, the width
    of its output on a zero batch, computed in eval mode (the model's mode is restored).

    Examples:
        >>> feature_dim(nn.Sequential(nn.Flatten(), nn.LazyLinear(5)), image_size=4)
        5
    """
    dim = getattr(model, attribute, None)
    if isinstance(dim, int):
        return dim
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dim = model(torch.zeros(2, 3, image_size, image_size)).shape[-1]
    model.train(was_training)
    return int(dim)
