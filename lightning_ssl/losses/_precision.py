"""Run losses in float32 (or float64 when given float64) whatever autocast is active: low
temperatures overflow in bf16/fp16."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])


def _as_float32(obj: Any) -> Any:
    if isinstance(obj, Tensor) and obj.is_floating_point() and obj.dtype != torch.float64:
        return obj.float()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_float32(o) for o in obj)
    return obj


def _first_device_type(objs: Any) -> str:
    for obj in objs:
        if isinstance(obj, Tensor):
            return obj.device.type
        if isinstance(obj, (list, tuple)) and obj:
            found = _first_device_type(obj)
            if found:
                return found
    return ""


def float32(fn: F) -> F:
    """Decorator: cast floating tensor arguments (also inside lists) to float32, autocast off.

    float64 arguments stay float64: a float64 run (``precision="64-true"``, the tests that compare
    trained runs) computes its losses in float64 too.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device_type = _first_device_type(list(args) + list(kwargs.values())) or "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*_as_float32(args), **{k: _as_float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
