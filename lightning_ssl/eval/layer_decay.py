"""Layer-wise learning-rate decay (ELECTRA, BEiT, MAE): lower layers learn more slowly.

MAE's ``util/lr_decay.py`` (after BEiT's ``optim_factory.py``): a ViT with ``L`` blocks has
``L + 2`` layer ids: 0 for the patch embedding, class token and position embedding, ``i + 1``
for block ``i``, ``L + 1`` for everything above the blocks (the final norm, ``fc_norm`` and the
classifier). Layer ``l`` learns at ``lr * decay ** (L + 1 - l)``: the head at ``lr``, block
``i`` at ``lr * decay ** (L - i)``. Parameters with one dimension (biases, norms) and the
model's ``no_weight_decay()`` names (``pos_embed``, ``cls_token`` ...) get no weight decay.

ResNets (no source defines it; ours): the same rule over stages: 0 for the stem
(``conv1``/``bn1``), ``k`` for ``layer<k>``, the top id for the classifier; ``decay = 1``
(every layer at ``lr``, as SimCLR fine-tunes) is the default for them.

Examples:
    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0)
    >>> head = torch.nn.Linear(192, 10)
    >>> groups = layer_decay_groups(vit, head, weight_decay=0.05, layer_decay=0.5)
    >>> sorted({(g["layer"], g["lr_scale"]) for g in groups})
    [(0, 0.125), (1, 0.25), (2, 0.5), (3, 1.0)]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

from lightning_ssl.eval.finetune_encoder import is_vit

#: Names a ViT keeps at the bottom layer besides the patch embedding (BEiT/MAE's stem).
_VIT_STEM = ("cls_token", "pos_embed", "reg_token", "dist_token", "norm_pre")


def vit_layer_id(name: str, num_blocks: int) -> int:
    """Layer of parameter ``name`` of a timm ViT (MAE's ``get_layer_id_for_vit``).

    Examples:
        >>> [vit_layer_id(n, 12) for n in ("pos_embed", "blocks.0.attn.qkv.weight", "fc_norm.bias")]
        [0, 1, 13]
    """
    if name.startswith(_VIT_STEM) or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_blocks + 1


def resnet_layer_id(name: str, num_stages: int) -> int:
    """Layer of parameter ``name`` of a ResNet: 0 stem, ``k`` for ``layer<k>``, top otherwise.

    Examples:
        >>> [resnet_layer_id(n, 4) for n in ("conv1.weight", "layer3.1.bn2.bias", "fc.weight")]
        [0, 3, 5]
    """
    stage = re.match(r"layer(\d+)\.", name)
    if stage:
        return int(stage.group(1))
    if name.startswith(("conv1", "bn1")):
        return 0
    return num_stages + 1


def layer_ids(model: nn.Module) -> tuple[Callable[[str], int], int]:
    """``(layer_of(parameter name), top layer id)`` of a timm ViT or a ResNet (timm or
    torchvision); no layering (every parameter at layer 0 = the top) for any other model."""
    if is_vit(model):
        blocks = len(model.blocks)  # type: ignore[arg-type]
        return (lambda name: vit_layer_id(name, blocks)), blocks + 1
    stages = [n for n, _ in model.named_children() if re.fullmatch(r"layer\d+", n)]
    if stages:
        return (lambda name: resnet_layer_id(name, len(stages))), len(stages) + 1
    return (lambda name: 0), 0


def layer_decay_groups(
    encoder: nn.Module, head: nn.Module, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups of ``encoder`` (the timm/torchvision model) and ``head`` (on top).

    Each group holds one layer's parameters with or without weight decay and says its
    ``lr_scale`` (multiply the learning rate by it), ``layer`` and ``name``
    (``layer_<id>_decay`` / ``layer_<id>_no_decay``).

    Raises:
        ValueError: ``layer_decay < 1`` for an encoder that is neither a ViT nor a ResNet.
    """
    layer_of, top = layer_ids(encoder)
    if top == 0 and layer_decay != 1.0:
        raise ValueError(
            f"layer_decay={layer_decay} needs a timm ViT or a ResNet, not "
            f"{type(encoder).__name__}: set --model.init_args.layer_decay 1.0"
        )
    no_decay_names = set(getattr(encoder, "no_weight_decay", lambda: set())())
    named = [(n, p, layer_of(n)) for n, p in encoder.named_parameters()]
    named += [(f"head.{n}", p, top) for n, p in head.named_parameters()]
    groups: dict[str, dict[str, Any]] = {}
    for name, param, layer in named:
        if not param.requires_grad:
            continue
        decayed = param.ndim > 1 and name not in no_decay_names
        key = f"layer_{layer}_{'decay' if decayed else 'no_decay'}"
        group = groups.setdefault(
            key,
            {
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr_scale": layer_decay ** (top - layer),
                "layer": layer,
                "name": key,
            },
        )
        group["params"].append(param)
    return list(groups.values())


def check_layer_decay(value: float) -> float:
    """``value`` if it is a decay factor in ``(0, 1]``."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {value}")
    return value

