"""Optimizers, parameter groups and the learning-rate rule shared by every method.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    >>> groups = parameter_groups(net.named_parameters(), weight_decay=1e-6)
    >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
    ([1, 3], [1e-06, 0.0])
    >>> scaled_lr(0.3, global_batch_size=4096, rule="linear")
    4.8
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from timm.optim import Lars
from torch import nn

OptimizerName = Literal["sgd", "lars", "adamw"]
ScalingRule = Literal["linear", "sqrt", "none"]


def parameter_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    overrides: dict[str, dict[str, Any]] | None = None,
    no_decay_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into groups; biases and normalization weights get no decay.

    A parameter with at most one dimension (bias, BatchNorm/LayerNorm scale and shift, ViT
    tokens excepted as they are 3-d) is excluded from weight decay and, because LARS adapts only
    groups with weight decay, from LARS adaptation too (SimCLR/BYOL practice).

    Args:
        named_parameters: ``module.named_parameters()``; frozen parameters are skipped.
        weight_decay: decay of the regular group.
        overrides: ``{name_prefix: {option: value}}`` options for parameters whose name starts with
            a prefix, e.g. ``{"predictor.": {"fixed_lr": True}}`` (SimSiam). Each prefix gets its
            own groups.
        no_decay_options: options of every no-decay group, e.g. ``{"lr_scale": 0.024}``
            (Barlow Twins' bias learning rate).

    Returns:
        Groups with keys ``params``, ``weight_decay``, ``name`` and any override options.
    """
    overrides = overrides or {}
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        prefix = next((p for p in overrides if name.startswith(p)), "")
        no_decay = param.ndim <= 1
        key = (prefix, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{prefix or 'default'}{'/no_decay' if no_decay else ''}",
                **overrides.get(prefix, {}),
                **((no_decay_options or {}) if no_decay else {}),
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def scaled_lr(
    base_lr: float, global_batch_size: int, rule: ScalingRule, reference_batch_size: int = 256
) -> float:
    """Learning rate for a global batch: ``base * B/256`` (linear) or ``base * sqrt(B/256)``."""
    ratio = global_batch_size / reference_batch_size
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; choose linear, sqrt or none")


def build_optimizer(
    name: OptimizerName,
    groups: list[dict[str, Any]],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    trust_coefficient: float = 0.001,
) -> torch.optim.Optimizer:
    """SGD (momentum), LARS (timm's, foreach) or AdamW over ``groups``.

    ``weight_decay`` is the default of groups that do not set their own. SGD and AdamW use
    PyTorch's fused kernels when every parameter is on a GPU (one launch per step), else the
    multi-tensor ``foreach`` path.
    """
    on_gpu = all(p.is_cuda for g in groups for p in g["params"])
    kernels = {"fused": True} if on_gpu else {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kernels
        )
    if name == "lars":
        return Lars(
            groups,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coeff=trust_coefficient,
            foreach=True,
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, **kernels)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, lars or adamw")
