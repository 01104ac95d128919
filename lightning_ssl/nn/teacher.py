"""Momentum-teacher construction shared by BYOL, MoCo, MoCo v3 and DINO."""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def frozen_copy(module: ModuleT) -> ModuleT:
    """A deep copy of ``module`` whose parameters take no gradient (an EMA teacher's start).

    Examples:
        >>> teacher = frozen_copy(nn.Linear(2, 2))
        >>> any(p.requires_grad for p in teacher.parameters())
        False
    """
    teacher = copy.deepcopy(module)
    teacher.requires_grad_(False)
    return teacher
