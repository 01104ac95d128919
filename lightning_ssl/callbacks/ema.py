"""Exponential moving average (momentum) teacher: BYOL's target network, MoCo's key encoder, DINO.

After every optimizer step: ``teacher <- tau * teacher + (1 - tau) * student`` for floating-point
parameters; buffers (BatchNorm running statistics) are copied from the student, averaged the
same way, or left to the teacher's own forward passes (``buffers``). ``tau`` is a pure
function of ``trainer.global_step`` (:func:`lightning_ssl.schedules.cosine_schedule`), so resuming
continues the schedule exactly; the teacher weights live in the LightningModule's state_dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_ssl.schedules import cosine_schedule, linear_schedule

#: What the EMA does with the teacher's buffers after each step: ``"copy"`` the student's,
#: average the floating-point ones like the parameters (``"ema"``; integer ones are copied), or
#: ``"leave"`` them to the teacher's own forward passes in training mode.
BufferPolicy = Literal["copy", "ema", "leave"]


@torch.no_grad()
def ema_update_(teacher: Sequence[Tensor], student: Sequence[Tensor], tau: float) -> None:
    """In place, ``teacher[i] <- tau * teacher[i] + (1 - tau) * student[i]`` (one fused kernel).

    Examples:
        >>> t, s = [torch.zeros(2)], [torch.ones(2)]
        >>> ema_update_(t, s, tau=0.75)
        >>> t[0].tolist()
        [0.25, 0.25]
    """
    if teacher:
        torch._foreach_lerp_(list(teacher), list(student), 1.0 - tau)


def _copy_(targets: list[Tensor], sources: list[Tensor]) -> None:
    if targets:
        torch._foreach_copy_(targets, sources)


def _split(module: nn.Module, buffers: BufferPolicy) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """By name: (tensors averaged, tensors copied); buffers per ``buffers``, ``"leave"`` none.

    Floating-point parameters are averaged, integer ones copied.
    """
    tensors: dict[str, Tensor] = dict(module.named_parameters())
    if buffers != "leave":
        tensors |= {f"buffer:{n}": b for n, b in module.named_buffers()}
    averaged = {
        n: t
        for n, t in tensors.items()
        if t.is_floating_point() and (buffers == "ema" or not n.startswith("buffer:"))
    }
    copied = {n: t for n, t in tensors.items() if n not in averaged}
    return averaged, copied


def _paired(
    teacher: dict[str, Tensor], student: dict[str, Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    return [teacher[n] for n in student], list(student.values())


def _check_pairing(kind: str, teacher: dict[str, Tensor], student: dict[str, Tensor]) -> None:
    if teacher.keys() != student.keys():
        raise ValueError(
            f"EMA teacher and student {kind} differ: only in teacher "
            f"{sorted(teacher.keys() - student.keys())}, "
            f"only in student {sorted(student.keys() - teacher.keys())}"
        )
    t, s = teacher, student
    bad = [n for n in s if (t[n].shape, t[n].dtype) != (s[n].shape, s[n].dtype)]
    if bad:
        raise ValueError(f"EMA teacher and student {kind} differ in shape or dtype: {bad}")
    if any(t[n] is s[n] for n in s):
        raise ValueError(f"EMA teacher and student share {kind}")


class EMA(pl.Callback):
    """Update ``teacher`` as an exponential moving average of ``student`` after each optimizer step.

    Parameters and buffers are matched by name (validated at ``setup``). The teacher is set to an
    exact copy of the student at ``setup("fit")`` of a fresh run (``global_step == 0``); when
    resuming, Lightning loads the checkpointed teacher after ``setup`` and overwrites that copy.
    Under gradient accumulation the update happens once per optimizer step, not once per batch.

    Args:
        student: Online network; may be a wrapper such as ``nn.Sequential(backbone, projector)``.
        teacher: Momentum network with the same parameter names and shapes; must be a submodule
            of the LightningModule so that it is saved in checkpoints.
        base_tau: ``tau`` at the first step (BYOL: 0.996, MoCo: 0.999, DINO: 0.996).
        final_tau: ``tau`` reached at the last step with the cosine schedule (BYOL, DINO: 1.0).
        schedule: ``"cosine"`` (BYOL's ``1 - (1 - base)(cos(pi k / K) + 1) / 2`` with ``K`` the
            trainer's total optimizer steps), ``"linear"`` (I-JEPA: ``base + (final - base) k / K``)
            or ``"constant"`` (MoCo: ``base_tau`` throughout).
        name: Distinguishes several EMA callbacks: state key and logged metric ``train/<name>_tau``.
        buffers: ``"copy"`` the student's buffers after each step; ``"ema"``: average them like
            the parameters; ``"leave"``: the teacher keeps its own, which its forward passes in
            training mode update (the official MoCo v2/v3, BYOL and DINO, whose momentum
            updates loop over ``parameters()`` only). With ``"leave"`` a teacher evaluated in
            eval mode (DINO) uses the running statistics of its own batches.

    Examples:
        >>> def configure_callbacks(self):  # doctest: +SKIP
        ...     student = nn.Sequential(self.backbone, self.projector)
        ...     return [EMA(student, self.teacher, base_tau=0.996)]
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        base_tau: float = 0.996,
        final_tau: float = 1.0,
        schedule: Literal["cosine", "linear", "constant"] = "cosine",
        name: str = "ema",
        buffers: BufferPolicy = "copy",
    ) -> None:
        if not (0.0 <= base_tau <= 1.0 and 0.0 <= final_tau <= 1.0):
            raise ValueError(f"tau must lie in [0, 1], got base={base_tau}, final={final_tau}")
        if schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {schedule!r}")
        if buffers not in ("copy", "ema", "leave"):
            raise ValueError(f"buffers must be 'copy', 'ema' or 'leave', got {buffers!r}")
        if teacher is student:
            raise ValueError("teacher and student must be different modules")
        self.student, self.teacher = student, teacher
        self.base_tau, self.final_tau = base_tau, final_tau
        self.schedule, self.name, self.buffers = schedule, name, buffers
        self._total_steps: int | float = 0
        self._last_step = 0
        self._tensors: tuple[list[Tensor], ...] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def tau(self, step: int) -> float:
        """``tau`` applied after optimizer step ``step`` (0-based), of ``total_steps`` in all."""
        if self.schedule == "constant":
            return self.base_tau
        if self.schedule == "linear":
            return linear_schedule(step, self._total_steps, self.base_tau, self.final_tau)
        return cosine_schedule(step, self._total_steps, self.base_tau, self.final_tau)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._validate(pl_module)
        self.teacher.requires_grad_(False)
        if trainer.global_step == 0:  # a resumed run loads the teacher from the checkpoint later
            self._copy_student()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tensors = self._match()  # after the strategy moved the model to its device
        self._total_steps = trainer.estimated_stepping_batches
        if self.schedule != "constant" and self._total_steps == float("inf"):
            raise ValueError(
                f"the {self.schedule} EMA schedule needs a finite max_steps or max_epochs"
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step <= self._last_step:  # no optimizer step since the last update
            return
        tau = self.tau(trainer.global_step - 1)
        self.update(tau)
        self._last_step = trainer.global_step
        pl_module.log(f"train/{self.name}_tau", tau, on_step=True, on_epoch=False)

    @torch.no_grad()
    def update(self, tau: float) -> None:
        """One EMA step of the floating-point parameters (and buffers per ``buffers``)."""
        if self._tensors is None:
            self._tensors = self._match()
        t_avg, s_avg, t_copy, s_copy = self._tensors
        ema_update_(t_avg, s_avg, tau)
        _copy_(t_copy, s_copy)

    def _match(self) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Teacher and student tensors paired by name: averaged ones, then copied ones."""
        (t_avg, t_copy) = _split(self.teacher, self.buffers)
        (s_avg, s_copy) = _split(self.student, self.buffers)
        return (*_paired(t_avg, s_avg), *_paired(t_copy, s_copy))

    @torch.no_grad()
    def _copy_student(self) -> None:
        """The teacher starts as an exact copy, buffers included, whatever ``buffers`` says."""
        (t_avg, t_copy), (s_avg, s_copy) = (
            _split(self.teacher, "copy"),
            _split(self.student, "copy"),
        )
        teacher, student = _paired(t_avg | t_copy, s_avg | s_copy)
        _copy_(teacher, student)

    def _validate(self, pl_module: pl.LightningModule) -> None:
        t, s = self.teacher, self.student
        _check_pairing("parameters", dict(t.named_parameters()), dict(s.named_parameters()))
        _check_pairing("buffers", dict(t.named_buffers()), dict(s.named_buffers()))
        owned = {id(x) for x in (*pl_module.parameters(), *pl_module.buffers())}
        if not all(id(x) in owned for x in (*t.parameters(), *t.buffers())):
            raise ValueError("the EMA teacher must be a submodule of the LightningModule")

    def state_dict(self) -> dict[str, Any]:
        return {"last_update_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict["last_update_step"]
