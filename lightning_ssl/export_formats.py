"""The files ``lightning-ssl export`` writes, one function per layout people load.

* :func:`write_state_files`: ``<prefix>.pt`` (a ``torch.save``-d state dict with torchvision/timm
  keys, for torchvision ``resnet*`` once ``fc = Identity()``), ``<prefix>.safetensors`` and the
  ``<prefix>.json`` sidecar;
* :func:`write_timm_hub_dir`: timm's ``save_for_hf`` layout, a folder with ``config.json`` and
  ``model.safetensors`` that ``timm.create_model("local-dir:<folder>", pretrained=True)`` loads
  offline and ``huggingface_hub.upload_folder`` publishes as a timm model on the hub.

Every file is written with the permissions of an ordinary file (``0666`` less the umask).

Examples:
    >>> import tempfile, timm
    >>> net = timm.create_model("test_resnet", num_classes=0)
    >>> folder = Path(tempfile.mkdtemp()) / "hub"
    >>> write_timm_hub_dir(net, "test_resnet", folder, {}, False)  # doctest: +ELLIPSIS
    {'config': '...config.json', 'weights': '...model.safetensors'}
    >>> timm.create_model(f"local-dir:{folder}", pretrained=True).num_classes
    0
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf
from torch import Tensor, nn

# Constructor arguments that name where weights came from, not what the model is.
_START_ONLY_KWARGS = ("pretrained", "pretrained_cfg_overlay")


def write_state_files(
    prefix: Path, state: dict[str, Tensor], meta: dict[str, Any]
) -> dict[str, str]:
    """Write ``<prefix>.{pt,safetensors,json}`` (a file suffix on ``prefix`` is dropped)."""
    if prefix.suffix in (".pt", ".safetensors", ".json"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    files = {ext: f"{prefix}.{ext}" for ext in ("pt", "safetensors", "json")}
    torch.save(state, files["pt"])
    save_file(
        state, files["safetensors"], metadata={"arch": meta["arch"], "format": meta["format"]}
    )
    Path(files["json"]).write_text(json.dumps(meta, indent=2) + "\n")
    normal_permissions(*files.values())
    return files


def write_timm_hub_dir(
    model: nn.Module,
    arch: str,
    directory: Path,
    model_args: dict[str, Any],
    cifar_stem: bool,
) -> dict[str, str]:
    """Write ``model`` (timm's ``arch``, or a torchvision ResNet with timm's keys) in timm's
    hub layout; ``model_args`` are the constructor arguments ``local-dir:`` loading needs.

    Raises:
        ValueError: the layout does not apply (a CIFAR stem, an arch timm does not know, or
            weights that do not fit timm's ``arch``).
    """
    if cifar_stem:
        raise ValueError(
            "timm's layout cannot hold a CIFAR stem (timm's ResNets have no 3x3 stride-1 stem "
            "without max-pool): export with --format torchvision and rebuild the stem"
        )
    if not timm.is_model(arch):
        raise ValueError(f"timm has no model {arch!r}: export with --format torchvision")
    args = {k: v for k, v in model_args.items() if k not in _START_ONLY_KWARGS}
    if getattr(model, "pretrained_cfg", None) is None:  # torchvision: same keys as timm's
        model = _as_timm_model(model, arch, args)
    directory.mkdir(parents=True, exist_ok=True)
    save_for_hf(model, str(directory), model_args=args, safe_serialization=True)
    files = {
        "config": str(directory / "config.json"),
        "weights": str(directory / "model.safetensors"),
    }
    normal_permissions(*files.values())
    return files


def _as_timm_model(model: nn.Module, arch: str, args: dict[str, Any]) -> nn.Module:
    timm_model = timm.create_model(arch, num_classes=0, **args)
    try:
        timm_model.load_state_dict(model.state_dict())
    except RuntimeError as error:
        raise ValueError(
            f"the backbone's weights do not fit timm's {arch} ({str(error).splitlines()[0]}): "
            "export with --format torchvision"
        ) from None
    return timm_model


def normal_permissions(*paths: str | Path) -> None:
    """Give written files ``0666`` less the umask (safetensors writes ``0600``)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)
