"""A pretrained encoder made ready for full fine-tuning: global pooling and stochastic depth.

MAE fine-tunes its ViT on the average of the patch tokens followed by a new LayerNorm
(``fc_norm``; the encoder's final ``norm`` is removed: facebookresearch/mae ``models_vit.py``)
and with stochastic depth rising linearly over the blocks (timm's ``drop_path_rate``: block
``i`` of ``L`` drops its residual branches with probability ``rate * i / (L - 1)``). Both are
applied here in place to the encoder rebuilt from a pretraining checkpoint, without renaming a
weight: the ViT keeps timm's own pooling code (``global_pool="avg"`` averages the tokens after
the class token).

Examples:
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0)
    >>> use_global_pool(vit)
    >>> vit.global_pool, type(vit.norm).__name__, type(vit.fc_norm).__name__
    ('avg', 'Identity', 'LayerNorm')
    >>> set_drop_path(vit, 0.1)
    >>> type(vit.blocks[0].drop_path1).__name__, round(vit.blocks[-1].drop_path1.drop_prob, 3)
    ('Identity', 0.1)
"""

from __future__ import annotations

import copy
from typing import Any

from timm.layers import DropPath
from torch import nn


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm-style ViT: ``patch_embed`` and a sequence of ``blocks``."""
    blocks = getattr(model, "blocks", None)
    return hasattr(model, "patch_embed") and isinstance(blocks, nn.Sequential)


def use_global_pool(vit: Any) -> None:
    """Classify a timm ViT from its average patch token through a new LayerNorm (MAE's
    ``global_pool``): ``fc_norm`` is a fresh copy of the final norm's type, the final norm is
    dropped (its weights are not used any more)."""
    if not is_vit(vit) or not hasattr(vit, "fc_norm") or not hasattr(vit, "global_pool"):
        raise ValueError(
            f"global_pool needs a timm VisionTransformer, got {type(vit).__name__}: set "
            "--model.init_args.global_pool false"
        )
    if getattr(vit, "attn_pool", None) is not None:
        raise ValueError("global_pool: this ViT pools with attention (global_pool='map')")
    norm = vit.norm
    if isinstance(norm, nn.Identity):
        raise ValueError("global_pool: the ViT has no final norm to move after the pooling")
    fresh = copy.deepcopy(norm)
    if hasattr(fresh, "reset_parameters"):
        fresh.reset_parameters()  # MAE's fc_norm starts at weight 1, bias 0
    vit.fc_norm, vit.norm, vit.global_pool = fresh, nn.Identity(), "avg"


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth rising linearly from 0 (first block) to ``rate`` (last block), as timm's
    ``drop_path_rate`` builds it; ``rate=0`` turns it off.

    Works on timm ViTs (each block's ``drop_path1``/``drop_path2``) and timm ResNets (each
    block's ``drop_path``).

    Raises:
        ValueError: ``rate > 0`` for a model without stochastic-depth slots (torchvision ResNets).
    """
    slots = _drop_path_slots(model)
    if not slots:
        if rate > 0:
            raise ValueError(
                f"drop_path_rate={rate}: {type(model).__name__} has no stochastic-depth slots "
                "(timm ViTs and timm ResNets have): set --model.init_args.drop_path_rate 0"
            )
        return
    for i, (block, names) in enumerate(slots):
        prob = rate * i / max(1, len(slots) - 1)
        for name in names:
            setattr(block, name, DropPath(prob) if prob > 0 else nn.Identity())


def _drop_path_slots(model: nn.Module) -> list[tuple[nn.Module, tuple[str, ...]]]:
    """Each residual block of ``model`` in order, with its stochastic-depth attribute names."""
    slots = []
    for module in model.modules():
        names = tuple(n for n in ("drop_path", "drop_path1", "drop_path2") if hasattr(module, n))
        # timm ResNets keep ``drop_path = None`` when off; ViT blocks an ``nn.Identity``.
        if names and all(isinstance(getattr(module, n), nn.Module | None) for n in names):
            slots.append((module, names))
    return slots
