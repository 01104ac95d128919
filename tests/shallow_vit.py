"""Smoke tests of configs with a ViT too large to build quickly on a CPU (ViT-H/14: 632M
parameters, about 2 minutes and 6 GB to build with its EMA copy): the same model class and
options at one block deep, and crops the patch divides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

#: timm names whose full depth a smoke test cannot afford.
_LARGE = re.compile(r"vit_(huge|giant|gigantic)")


def shallow_backbone_args(config: Path) -> list[str]:
    """``--model.init_args.backbone_kwargs=...`` with ``depth: 1`` added for a large ViT's
    config (its other backbone options kept), else nothing."""
    model = (yaml.safe_load(config.read_text()).get("model") or {}).get("init_args") or {}
    if not _LARGE.search(str(model.get("backbone", ""))):
        return []
    kwargs = {**(model.get("backbone_kwargs") or {}), "depth": 1}
    return [f"--model.init_args.backbone_kwargs={json.dumps(kwargs)}"]


def smoke_image_size(config: Path, default: int = 32) -> int:
    """``default`` rounded down to a multiple of the config's ViT patch (``patch14``: 28)."""
    match = re.search(r"patch(\d+)", config.read_text())
    patch = int(match.group(1)) if match else 0
    return default if not patch or default % patch == 0 else default // patch * patch
