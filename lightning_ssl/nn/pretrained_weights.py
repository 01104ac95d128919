"""Pretrained starts for :class:`~lightning_ssl.nn.backbones.Backbone`.

``pretrained`` names where the first weights come from:

* a torchvision weights enum, ``"ResNet50_Weights.IMAGENET1K_V2"`` (or only the member,
  ``"IMAGENET1K_V2"``, ``"DEFAULT"``; ``True`` means ``DEFAULT``), for torchvision ResNets. The
  file is read from torch hub's cache (``$TORCH_HOME/hub/checkpoints``), downloaded there first
  if it is missing (``torch.hub.load_state_dict_from_url``, hash checked on download);
* ``True`` for a timm model: timm's own pretrained config, which reads a local file when the
  backbone kwargs carry ``pretrained_cfg_overlay={"file": "weights.safetensors"}`` (timm applies
  the model's checkpoint filter, e.g. resampling a ViT's position embedding to ``img_size``);
* a file path, ``.safetensors`` or a ``torch.save``-d state dict (e.g. the ``.safetensors`` that
  ``lightning-ssl export`` writes, or timm's ``model.safetensors``), loaded strictly.

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``, never unpickled freely.
Weights load into the model as built, so with ``cifar_stem`` after the stem replacement: a 7x7
ImageNet ``conv1.weight`` cannot fill the 3x3 stem and is skipped (with a warning), so the stem
starts from its random initialisation and every other layer from the weights. A classifier
(torchvision ``fc.*``, timm's ``pretrained_cfg["classifier"]``) is dropped, the backbone having
none. Any other missing, unexpected or differently shaped tensor is a one-line ``ValueError``.

Examples:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(); net.fc = torch.nn.Identity()
    >>> load_weights(net, {k: v for k, v in net.state_dict().items()}, "a copy", cifar_stem=False)
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torchvision
from torch import Tensor, nn

#: ``None`` (random start), ``True`` (the library's default weights), an enum name or a file.
Pretrained = bool | str | Path | None

_TORCHVISION_CLASSIFIER = ("fc",)
_SKIP = {"active": False}


@contextlib.contextmanager
def skipping_pretrained() -> Iterator[None]:
    """Build backbones without reading their ``pretrained`` weights, for models whose weights
    come next from a checkpoint (the start's file may be gone, a download pointless)."""
    previous, _SKIP["active"] = _SKIP["active"], True
    try:
        yield
    finally:
        _SKIP["active"] = previous


def pretrained_skipped() -> bool:
    """Whether :func:`skipping_pretrained` is in effect."""
    return _SKIP["active"]


def torchvision_weights(arch: str, spec: bool | str) -> torchvision.models.WeightsEnum:
    """The weights enum member ``spec`` names for the torchvision model ``arch``.

    Examples:
        >>> torchvision_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1").url.split("/")[-1]
        'resnet18-f37072fd.pth'
    """
    enum = torchvision.models.get_model_weights(arch)
    member = "DEFAULT" if spec is True else str(spec).rpartition(".")[2]
    enum_name = str(spec).rpartition(".")[0]
    if (enum_name and enum_name != enum.__name__) or member not in enum.__members__:
        choices = ", ".join(f"{enum.__name__}.{m}" for m in enum.__members__)
        raise ValueError(f"pretrained={spec!r} is no weights of {arch}: choose one of {choices}")
    return enum[member]


def is_weights_name(spec: object) -> bool:
    """Whether ``spec`` names a torchvision weights enum member rather than a file."""
    if not isinstance(spec, str) or Path(spec).suffix in (".safetensors", ".pt", ".pth", ".bin"):
        return False
    return "_Weights." in spec or spec.isupper()


def torchvision_state_dict(weights: torchvision.models.WeightsEnum) -> dict[str, Tensor]:
    """The state dict of ``weights`` from torch hub's cache (downloaded there once if missing)."""
    return torch.hub.load_state_dict_from_url(
        weights.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``-d state dict (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained weights file {str(path)!r} not found: give an existing file")
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{str(path)!r} is not a weights-only state dict ({reason}); for a Lightning "
            "checkpoint run `lightning-ssl export` and pass the .safetensors it writes"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} holds no flat state dict of tensors")
    return state


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module names of the classifier that pretrained files carry and a backbone lacks."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        found = cfg["classifier"]
        return (found,) if isinstance(found, str) else tuple(found)
    return _TORCHVISION_CLASSIFIER


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str, cifar_stem: bool) -> None:
    """Load ``state`` into ``model`` strictly, less its classifier (and a 7x7 stem, see above)."""
    own = model.state_dict()
    heads = tuple(f"{name}." for name in classifier_names(model))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    stem = state.get("conv1.weight")
    if cifar_stem and stem is not None and stem.shape != own["conv1.weight"].shape:
        warnings.warn(
            f"pretrained {source}: conv1.weight {tuple(stem.shape)} does not fit the CIFAR stem "
            f"{tuple(own['conv1.weight'].shape)}; the stem starts from random weights",
            stacklevel=3,
        )
        state = {k: v for k, v in state.items() if k != "conv1.weight"}
        state["conv1.weight"] = own["conv1.weight"]
    problems = _mismatches(own, state)
    if problems:
        raise ValueError(
            f"pretrained weights {source} do not fit {type(model).__name__}: {problems} "
            "(same architecture, stem and kwargs as when the weights were saved?)"
        )
    model.load_state_dict(state)


def _mismatches(own: dict[str, Tensor], state: dict[str, Tensor]) -> str:
    """``missing ...; unexpected ...; shape ...`` (first three of each), ``""`` if none."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = [
        f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if keys
    ]
    return "; ".join(parts)


def pretrained_source(pretrained: Any) -> str:
    """How ``pretrained`` is named in messages."""
    return repr(str(pretrained)) if isinstance(pretrained, (str, Path)) else repr(pretrained)
