"""Domains of numeric arguments, checked when an object is built (not steps later as a NaN).

Rules are keyed by argument name, so every method, DataModule or callback that uses a name gets
its rule: :func:`check_values` reads the values an object was built with and raises
:class:`InvalidValueError` naming the class, the argument, the value and the domain.

Temperatures have a floor, :data:`MIN_TEMPERATURE` = 1e-3, not only ``> 0``: logits are
similarities in [-1, 1] divided by the temperature, and float32's smallest normal number is
``exp(-87.3)``, so at ``T = 1e-3`` a similarity gap of 0.09 already underflows the softmax to
exactly 0: the loss sees only its nearest pair and gradients are scaled by ``1/T = 1000``. The
smallest published value (DINO's teacher temperature, 0.04; the kNN vote's 0.07) is 40x above.

Examples:
    >>> check_values("SimCLR", {"temperature": 0.2, "proj_dim": 128})
    >>> check_values("SimCLR", {"proj_dim": 0})
    Traceback (most recent call last):
    ...
    lightning_ssl.validation.InvalidValueError: SimCLR: proj_dim must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

MIN_TEMPERATURE = 1e-3


class InvalidValueError(ValueError):
    """An argument outside its domain."""


def _at_least(low: float, integer: bool = False) -> tuple[Callable[[Any], bool], str]:
    kind = "an integer" if integer else "a number"
    return (lambda v: v >= low and (not integer or float(v).is_integer())), f"{kind} >= {low:g}"


_UNIT = ((lambda v: 0.0 <= v <= 1.0), "in [0, 1]")
_POSITIVE_INT = _at_least(1, integer=True)
_COUNT = _at_least(0, integer=True)
_NON_NEGATIVE = _at_least(0.0)
_TEMPERATURE = _at_least(MIN_TEMPERATURE)

#: Argument name -> (predicate, domain in words). ``None`` always passes (an option left unset).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # temperatures and the Sinkhorn entropy weight divide similarities
    **dict.fromkeys(
        (
            "temperature",
            "student_temp",
            "teacher_temp",
            "warmup_teacher_temp",
            "sinkhorn_epsilon",
            "teacher_patch_temp",
            "warmup_teacher_patch_temp",
        ),
        _TEMPERATURE,
    ),
    # sizes of layers, images and classes
    **dict.fromkeys(
        (
            "proj_dim",
            "proj_hidden_dim",
            "pred_hidden_dim",
            "hidden_dim",
            "out_dim",
            "patch_out_dim",
            "bottleneck_dim",
            "num_prototypes",
            "proj_num_layers",
            "num_classes",
            "image_size",
            "local_size",
            "batch_size",
            "sinkhorn_iterations",
            "loss_tile_size",
            "k",
            "chunk_size",
            "bank_limit",
            "check_every_n_steps",
            "every_n_epochs",
            "embed_dim",
            "text_width",
            "text_layers",
            "text_heads",
            "context_length",
        ),
        _POSITIVE_INT,
    ),
    # methods say how many they need (SSLMethod.min_global_crops: 2; MAE, CLIP, InstDisc: 1)
    "num_global_crops": _POSITIVE_INT,
    **dict.fromkeys(
        (
            "num_local_crops",
            "queue_size",
            "queue_start_epoch",
            "freeze_prototypes_steps",
            "freeze_last_layer_epochs",
            "num_workers",
        ),
        _COUNT,
    ),
    # momenta, EMA taus and fractions
    **dict.fromkeys(
        ("momentum", "tau_base", "tau_final", "center_momentum", "min_lr_ratio"), _UNIT
    ),
    # optimisation and loss weights
    **dict.fromkeys(
        (
            "lr",
            "lr_biases",
            "weight_decay",
            "weight_decay_end",
            "warmup_epochs",
            "teacher_temp_warmup_epochs",
            "clip_grad",
            "sim_coeff",
            "std_coeff",
            "cov_coeff",
            "lambda_offdiag",
            "scale_loss",
            "cls_weight",
            "patch_weight",
            "koleo_weight",
            "variance_weight",
            "covariance_weight",
        ),
        _NON_NEGATIVE,
    ),
    # MAE: the hidden fraction of patches (all hidden leaves the encoder nothing) and the decoder
    "mask_ratio": ((lambda v: 0.0 <= v < 1.0), "in [0, 1)"),
    **dict.fromkeys(("decoder_dim", "decoder_depth", "decoder_num_heads"), _POSITIVE_INT),
    # I-JEPA: target blocks and the predictor; the context's floor; the warm-up's first LR
    **dict.fromkeys(
        ("num_targets", "predictor_dim", "predictor_depth", "predictor_num_heads"), _POSITIVE_INT
    ),
    "min_keep": _COUNT,
    "warmup_start_ratio": _UNIT,
    # InstDisc's memory bank
    **dict.fromkeys(("feature_dim", "bank_size"), _POSITIVE_INT),
    **dict.fromkeys(("num_negatives", "bank_seed"), _COUNT),
    "bank_momentum": ((lambda v: 0.0 <= v < 1.0), "in [0, 1)"),
    "proximal_weight": _NON_NEGATIVE,
    # PCL's clusterings (a list of sizes; a lone number is refused) and k-means
    "num_clusters": ((lambda v: False), "a list of integers >= 2 (one per granularity)"),
    **dict.fromkeys(
        (
            "num_negative_prototypes",
            "kmeans_iterations",
            "kmeans_restarts",
            "max_points_per_centroid",
        ),
        _POSITIVE_INT,
    ),
    **dict.fromkeys(("proto_warmup_epochs", "cluster_seed"), _COUNT),
    # CPC's patch grid, context network and per-patch augmentation
    **dict.fromkeys(
        (
            "patch_size",
            "patch_stride",
            "prediction_steps",
            "context_blocks",
            "context_hidden_dim",
        ),
        _POSITIVE_INT,
    ),
    "patch_jitter": _COUNT,
    **dict.fromkeys(("patch_flip_prob", "colour_drop_prob"), _UNIT),
    # LARS' trust coefficient and a loss multiplier: a scale, so strictly positive
    **dict.fromkeys(
        (
            "trust_coefficient",
            "loss_scale",
            "init_logit_scale",
            "max_logit_scale",
            "concentration_alpha",
        ),
        ((lambda v: v > 0), "a number > 0"),
    ),
}


def check_value(owner: str, name: str, value: Any) -> None:
    """Raise :class:`InvalidValueError` if ``value`` is outside ``name``'s domain (NaN and
    infinity are outside every domain)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise InvalidValueError(f"{owner}: {name} must be finite, got {value}")
    rule = RULES.get(name)
    if rule is not None and not rule[0](value):
        raise InvalidValueError(f"{owner}: {name} must be {rule[1]}, got {value}")


def check_values(owner: str, values: Mapping[str, Any]) -> None:
    """:func:`check_value` for every argument in ``values`` (e.g. a module's ``hparams``)."""
    for name, value in values.items():
        check_value(owner, name, value)


def check_heads(owner: str, width_name: str, width: int, heads_name: str, heads: int) -> None:
    """Raise :class:`InvalidValueError` unless attention ``heads`` divide the ``width``
    (timm's own error, "dim should be divisible by num_heads", names neither argument).

    Examples:
        >>> check_heads("IJEPA", "predictor_dim", 64, "predictor_num_heads", 3)
        Traceback (most recent call last):
        ...
        lightning_ssl.validation.InvalidValueError: IJEPA: predictor_dim=64 is not a multiple \
of its 3 attention heads (predictor_num_heads): use e.g. predictor_dim=63 or 66, or heads \
that divide 64
    """
    if heads >= 1 and width % heads:
        lower, upper = width // heads * heads, (width // heads + 1) * heads
        raise InvalidValueError(
            f"{owner}: {width_name}={width} is not a multiple of its {heads} attention heads "
            f"({heads_name}): use e.g. {width_name}={lower or upper} or {upper}, or heads that "
            f"divide {width}"
        )


def check_trainer(accumulate_grad_batches: int, max_epochs: int | None = None) -> None:
    """Trainer values that Lightning would otherwise turn into a ``ZeroDivisionError``.

    Examples:
        >>> check_trainer(accumulate_grad_batches=0)
        Traceback (most recent call last):
        ...
        lightning_ssl.validation.InvalidValueError: Trainer: accumulate_grad_batches must be an \
integer >= 1, got 0
    """
    if not (isinstance(accumulate_grad_batches, int) and accumulate_grad_batches >= 1):
        raise InvalidValueError(
            f"Trainer: accumulate_grad_batches must be an integer >= 1, got "
            f"{accumulate_grad_batches}"
        )
    if max_epochs is not None and max_epochs < -1:
        raise InvalidValueError(
            f"Trainer: max_epochs must be >= -1 (-1: no limit), got {max_epochs}"
        )
