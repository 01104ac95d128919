"""Optimizers, parameter groups and the learning-rate rule shared by every method.

Examples:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    >>> groups = parameter_groups(net.named_parameters(), weight_decay=1e-6)
    >>> [len(g["params"]) for g in groups], [g["weight_decay"] for g in groups]
    ([1, 3], [1e-06, 0.0])
    >>> [g["lars_adapt"] for g in groups]
    [True, False]
    >>> scaled_lr(0.3, global_batch_size=4096, rule="linear")
    4.8
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from lightning_ssl.lars import LARS, LARS_PRESETS, LarsPresetName

OptimizerName = Literal["sgd", "lars", "adamw"]
ScalingRule = Literal["linear", "sqrt", "none"]


def parameter_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    overrides: dict[str, dict[str, Any]] | None = None,
    no_decay_options: dict[str, Any] | None = None,
    decay_bias_and_norm: bool = False,
    adapt_bias_and_norm: bool = False,
) -> list[dict[str, Any]]:
    """Split trainable parameters into groups; biases and norm weights get their own groups.

    A parameter with at most one dimension (bias, BatchNorm/LayerNorm scale and shift, ViT
    tokens excepted as they are 3-d) is decayed only with ``decay_bias_and_norm`` and adapted
    by LARS only with ``adapt_bias_and_norm`` (group key ``lars_adapt``). The sources differ:
    SimCLR, BYOL, Barlow Twins, VICReg, MoCo v3 (LARS) and DINO exclude them from both; MoCo
    v1/v2, SimSiam and SwAV (LARC) decay (and SwAV adapts) every parameter.

    Args:
        named_parameters: ``module.named_parameters()``; frozen parameters are skipped.
        weight_decay: decay of the regular group.
        overrides: ``{name_prefix: {option: value}}`` options for parameters whose name starts with
            a prefix, e.g. ``{"predictor.": {"fixed_lr": True}}`` (SimSiam). Each prefix gets its
            own groups.
        no_decay_options: options of every bias/norm group, e.g. ``{"lr_scale": 0.024}``
            (Barlow Twins' bias learning rate).
        decay_bias_and_norm: apply ``weight_decay`` to biases and norm weights too.
        adapt_bias_and_norm: let LARS adapt the learning rate of biases and norm weights too.

    Returns:
        Groups with keys ``params``, ``weight_decay``, ``lars_adapt``, ``name`` and any override
        options.
    """
    overrides = overrides or {}
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        prefix = next((p for p in overrides if name.startswith(p)), "")
        bias_or_norm = param.ndim <= 1
        key = (prefix, bias_or_norm)
        if key not in groups:
            decayed = decay_bias_and_norm or not bias_or_norm
            suffix = ("/bias_norm" if decayed else "/no_decay") if bias_or_norm else ""
            groups[key] = {
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lars_adapt": adapt_bias_and_norm or not bias_or_norm,
                "name": f"{prefix or 'default'}{suffix}",
                **overrides.get(prefix, {}),
                **((no_decay_options or {}) if bias_or_norm else {}),
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
    lars_preset: LarsPresetName = "byol",
    trust_coefficient: float | None = None,
) -> torch.optim.Optimizer:
    """SGD (momentum), LARS (:class:`~lightning_ssl.lars.LARS` in a source's variant) or AdamW.

    ``weight_decay`` is the default of groups that do not set their own. ``lars_preset`` names
    the source whose LARS update rule to use (:data:`~lightning_ssl.lars.LARS_PRESETS`);
    ``trust_coefficient`` overrides its ``eta``. SGD and AdamW use
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
        if lars_preset not in LARS_PRESETS:
            raise ValueError(
                f"unknown lars_preset {lars_preset!r}; choose one of {', '.join(LARS_PRESETS)}"
            )
        options = LARS_PRESETS[lars_preset].optimizer_options()
        if trust_coefficient is not None:
            options["eta"] = trust_coefficient
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, **kernels)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, lars or adamw")
