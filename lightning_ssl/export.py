"""Export the pretrained backbone alone, with torchvision/timm keys: ``lightning-ssl export``.

``lightning-ssl export runs/byol-imagenet/checkpoints/last.ckpt byol_r50`` writes

* ``byol_r50.pt`` (``torch.save`` of the state dict) and ``byol_r50.safetensors``;
* ``byol_r50.json``: ``arch``, ``format``, ``cifar_stem``, ``feature_dim``, ``image_size``,
  ``backbone_kwargs``, ``method`` and the source ``checkpoint``.

``--format timm-hub`` writes the folder ``byol_r50/`` in timm's hub layout instead
(``config.json`` + ``model.safetensors``, see :mod:`lightning_ssl.export_formats`)::

    m = timm.create_model("local-dir:byol_r50", pretrained=True)  # offline, features as trained

The backbone is the one the method evaluates (``extract_features``: the student backbone, or
DINO's teacher). Its keys are those of ``torchvision.models.<arch>()`` and of
``timm.create_model(<arch>)`` (a timm ResNet uses torchvision's names) without the classifier,
so the models load it strictly once their classifier is removed::

    # torchvision (ResNets)
    m = torchvision.models.resnet50(); m.fc = torch.nn.Identity()
    m.load_state_dict(torch.load("byol_r50.pt", weights_only=True))

    # timm (any exported model; num_classes=0 drops the classifier)
    m = timm.create_model("resnet50", num_classes=0)
    m.load_state_dict(safetensors.torch.load_file("byol_r50.safetensors"))

A backbone pretrained with ``cifar_stem: true`` (see the JSON) has a 3x3 stride-1 first
convolution and no max-pool: rebuild that stem *before* ``load_state_dict``, in either library
(timm's hub layout cannot describe it: ``timm-hub`` refuses such a backbone)::

    m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); m.maxpool = torch.nn.Identity()

A CPC backbone encodes patches (``patch_grid`` in the JSON: side, stride and grid size); CPC's
features are the mean of its vectors over an image's grid of patches.

A ViT was built with ``img_size`` = ``image_size`` and ``dynamic_img_size=True`` (both in the
JSON): pass them to ``timm.create_model`` so that the position embedding has the same shape.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from lightning_ssl.data.patches import PatchGrid
from lightning_ssl.eval.pretrained import feature_encoder, load_pretrained
from lightning_ssl.export_formats import write_state_files, write_timm_hub_dir
from lightning_ssl.nn.backbones import TORCHVISION_RESNETS, Backbone

ExportFormat = Literal["auto", "torchvision", "timm", "timm-hub"]
FORMATS = ("auto", "torchvision", "timm", "timm-hub")


def export_backbone(
    checkpoint: str | Path, output: str | Path, format: ExportFormat = "auto"
) -> dict[str, Any]:
    """Write the evaluation backbone of ``checkpoint`` to ``<output>.{pt,safetensors,json}``.

    Args:
        checkpoint: a Lightning checkpoint written by any :class:`SSLMethod`.
        output: path prefix of the three files (a ``.pt`` or ``.safetensors`` suffix is dropped);
            the folder for ``timm-hub``.
        format: ``torchvision`` (torchvision ResNets only), ``timm`` or ``auto`` (torchvision for
            torchvision ResNets, else timm): the keys are the same for ResNets in both.
            ``timm-hub``: timm's ``save_for_hf`` folder (not for a CIFAR stem).

    Returns:
        The metadata written to the JSON sidecar, with the written ``files``.

    Examples:
        >>> export_backbone("last.ckpt", "simclr_r18")  # doctest: +SKIP
        {'arch': 'resnet18', 'format': 'torchvision', 'cifar_stem': True, ...}
    """
    method = load_pretrained(checkpoint)
    backbone = feature_encoder(method)
    grid = getattr(method, "grid", None)
    if not isinstance(backbone, Backbone) and isinstance(grid, PatchGrid):
        backbone = method.backbone  # CPC: the features are the mean of its patch vectors
    if not isinstance(backbone, Backbone):
        raise ValueError(
            f"{type(method).__name__}.extract_features is not the output of one backbone: "
            "there is no torchvision/timm model to export"
        )
    arch, format = _export_format(backbone, format)
    # Backbone wraps the library's model as ``.model``: its own state dict has the library keys.
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    hp = method.hparams
    meta: dict[str, Any] = {
        "arch": arch,
        "format": format,
        "cifar_stem": bool(hp.get("cifar_stem", False)),
        "feature_dim": int(backbone.dim),
        "image_size": int(hp.get("image_size", 224)),
        "backbone_kwargs": dict(hp.get("backbone_kwargs") or {}),
        "method": type(method).__name__,
        "checkpoint": str(Path(checkpoint).resolve()),
    }
    if isinstance(grid, PatchGrid):  # the encoder saw patches: the features average its grid
        meta["patch_grid"] = {"patch": grid.patch, "stride": grid.stride, "size": grid.size}
    if format == "timm-hub":
        files = write_timm_hub_dir(
            backbone.model, arch, Path(output), backbone.model_kwargs, meta["cifar_stem"]
        )
    else:
        files = write_state_files(Path(output), state, meta)
    return {**meta, "files": files}


def _export_format(backbone: Backbone, format: ExportFormat) -> tuple[str, ExportFormat]:
    """``(arch, format)``: the library's model name and the key format, ``auto`` resolved."""
    arch = backbone.name.removeprefix("timm:")
    torchvision_arch = backbone.name in TORCHVISION_RESNETS
    if format == "auto":
        format = "torchvision" if torchvision_arch else "timm"
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "torchvision" and not torchvision_arch:
        raise ValueError(f"{arch} is a timm model: export it with format='timm' or 'timm-hub'")
    return arch, format


def main(argv: list[str] | None = None) -> int:
    """``lightning-ssl export CHECKPOINT OUT [--format auto|torchvision|timm|timm-hub]``."""
    parser = argparse.ArgumentParser(
        prog="lightning-ssl export",
        description="Save a pretraining checkpoint's backbone with torchvision/timm keys "
        "(.pt, .safetensors and a .json sidecar).",
    )
    parser.add_argument("checkpoint", help="Lightning checkpoint of any lightning-ssl method")
    parser.add_argument("output", help="path prefix of the written files")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    args = parser.parse_args(argv)
    try:
        meta = export_backbone(args.checkpoint, args.output, args.format)
    except ValueError as error:  # a format that does not apply: one line, not a traceback
        parser.error(str(error))
    print(
        f"{meta['method']} {meta['arch']} backbone ({meta['format']} keys, "
        f"{meta['feature_dim']}-d features, cifar_stem={meta['cifar_stem']}) -> "
        + ", ".join(meta["files"].values())
    )
    return 0
