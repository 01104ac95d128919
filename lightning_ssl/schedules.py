"""Schedules as pure functions of the global step (EMA tau, LR factor, temperatures, weight decay).

A schedule that only reads the step needs no state of its own: Lightning restores
``trainer.global_step`` on resume, so the schedule continues exactly where it stopped.
Steps before 0 are treated as 0 and steps after the end as the end (values are clamped).

Examples:
    >>> cosine_schedule(0, 100, start=0.996, end=1.0)
    0.996
    >>> linear_warmup_cosine(5, warmup_steps=10, total_steps=100)
    0.5
    >>> linear_warmup_constant(20, warmup_steps=10, start=0.04, end=0.07)
    0.07
"""

from __future__ import annotations

import math


def cosine_schedule(step: int, total_steps: float, start: float, end: float) -> float:
    """Go from ``start`` to ``end`` along a half cosine over ``total_steps``; ``end`` afterwards.

    ``value = end + (start - end) * (1 + cos(pi * step / total_steps)) / 2``. With
    ``start=tau_base`` and ``end=1`` this is BYOL's target decay rate
    ``1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` (Grill et al., 2020, Sec. 3.2); also DINO's
    weight decay (0.04 -> 0.4).

    Args:
        step: Current step ``k``.
        total_steps: Step ``K`` at which ``end`` is reached; ``<= 0`` gives ``end`` at once.
        start: Value at step 0.
        end: Value from ``total_steps`` on.

    Examples:
        >>> cosine_schedule(50, 100, start=0.0, end=1.0)
        0.5
        >>> cosine_schedule(1000, 100, start=0.0, end=1.0)
        1.0
    """
    if total_steps <= 0:
        return end
    progress = min(max(step, 0), total_steps) / total_steps
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_schedule(step: int, total_steps: float, start: float, end: float) -> float:
    """Go linearly from ``start`` to ``end`` over ``total_steps``; ``end`` afterwards.

    I-JEPA's EMA momentum, 0.996 -> 1.0 over the whole run (official ``train.py``:
    ``ema[0] + i * (ema[1] - ema[0]) / (ipe * num_epochs * ipe_scale)``).

    Examples:
        >>> linear_schedule(25, 100, start=0.996, end=1.0)
        0.997
    """
    if total_steps <= 0:
        return end
    return start + (end - start) * min(max(step, 0), total_steps) / total_steps


def linear_warmup_constant(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Go linearly from ``start`` to ``end`` over ``warmup_steps``, then stay at ``end``.

    DINO's teacher temperature: 0.04 -> 0.07 over the first 30 epochs (Caron et al., 2021).

    Args:
        step: Current step.
        warmup_steps: Step at which ``end`` is reached; ``<= 0`` gives ``end`` at once.
        start: Value at step 0.
        end: Value from ``warmup_steps`` on.

    Examples:
        >>> linear_warmup_constant(5, warmup_steps=10, start=0.0, end=1.0)
        0.5
    """
    if step >= warmup_steps:
        return end
    return start + (end - start) * max(step, 0) / warmup_steps


def linear_warmup_cosine(
    step: int,
    warmup_steps: int,
    total_steps: int,
    start: float = 0.0,
    peak: float = 1.0,
    end: float = 0.0,
) -> float:
    """Linear warmup ``start -> peak`` over ``warmup_steps``, then half cosine ``peak -> end``.

    With the defaults this is a learning-rate *factor* (multiply the base LR, e.g. in
    ``torch.optim.lr_scheduler.LambdaLR`` stepped every optimizer step): 0 -> 1 -> 0. Use
    ``end=final_ratio`` for a floor (e.g. ``1e-3``). Note that ``start=0`` makes the first optimizer
    step a no-op for SGD.

    Args:
        step: Current step.
        warmup_steps: Steps of linear warmup; the value is ``peak`` at this step.
        total_steps: Step at which ``end`` is reached (warmup included); ``end`` afterwards.
        start: Value at step 0.
        peak: Value at the end of warmup.
        end: Final value.

    Examples:
        >>> linear_warmup_cosine(0, warmup_steps=10, total_steps=110)
        0.0
        >>> linear_warmup_cosine(10, warmup_steps=10, total_steps=110)
        1.0
        >>> round(linear_warmup_cosine(60, warmup_steps=10, total_steps=110, end=0.2), 6)
        0.6
    """
    if step < warmup_steps:
        return linear_warmup_constant(step, warmup_steps, start, peak)
    return cosine_schedule(step - warmup_steps, total_steps - warmup_steps, peak, end)
