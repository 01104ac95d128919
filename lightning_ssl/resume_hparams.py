"""Resuming with other values than the checkpoint's: applied from the resumed step, or refused.

A resumed run is built from its own configuration (command line and config files), then the
checkpoint's state is restored into it. Lightning restores the optimizer's param groups and the
scheduler's base learning rates too, which would silently put the checkpoint's learning rate
back after ``--model.init_args.lr 0.01``. Here, when a method restores a checkpoint
(:func:`reconcile`, called from ``SSLMethod.on_load_checkpoint``):

* values that change the weights (dimensions, backbone, ...: the checkpoint's tensors no longer
  fit the model) and the optimizer type (its state would not fit the new optimizer) are refused
  with :class:`ResumeMismatchError`, naming each differing argument and both values;
* every other difference applies: the model was built from the run's values, and
  :class:`CurrentOptimizerSettings` rebuilds the param groups' hyperparameters (``lr``,
  ``initial_lr``, ``weight_decay``, ``momentum`` ...) and the scheduler's base learning rates
  from the freshly configured optimizer after Lightning's restore, while the optimizer state
  (momentum buffers) and the step stay restored. Each change is logged.

Example (the documented way to continue after a NaN with a lower learning rate)::

    lightning-ssl fit --config configs/simclr/cifar10.yaml --ckpt_path last \\
        --model.init_args.lr 0.1
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from lightning_ssl.checkpoint import check_checkpoint_method
from lightning_ssl.lightning_types import trainer_attributes


class ResumeMismatchError(ValueError):
    """The run's values cannot continue the checkpoint's run."""


def changed_hparams(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (checkpoint value, run value)}`` for the arguments that differ.

    Examples:
        >>> changed_hparams({"lr": 0.4, "proj_dim": 64}, {"lr": 0.1, "proj_dim": 64})
        {'lr': (0.4, 0.1)}
    """
    return {
        name: (saved[name], current[name])
        for name in sorted(saved.keys() & current.keys())
        if not name.startswith("_") and _plain(saved[name]) != _plain(current[name])
    }


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal (a YAML list against a saved tuple)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def reconcile(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint of another class or with other weight shapes; log what changes.

    Called before the weights are loaded, so a refusal replaces Lightning's key/shape error.
    """
    name = type(module).__name__
    check_checkpoint_method(checkpoint, name)
    changes = changed_hparams(checkpoint.get("hyper_parameters", {}), dict(module.hparams))
    listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
    mismatch = _weight_mismatch(module, checkpoint.get("state_dict", {}))
    if "optimizer" in changes or (mismatch and changes):
        cause = "the optimizer type" if "optimizer" in changes else f"the weights ({mismatch})"
        raise ResumeMismatchError(
            f"cannot restore this {name} checkpoint into this run: {cause} differ. Arguments "
            f"that differ from the checkpoint (checkpoint -> this run): {listed}. Arguments "
            "that change the weights (backbone, dims, prototypes, queue size ...) or the "
            "optimizer type must keep the checkpoint's values: pass them as they were"
        )
    trainer = module._trainer
    if trainer is None or trainer.state.fn != TrainerFn.FITTING:
        return
    if changes:
        rank_zero_info(
            f"{name}: resuming at step {checkpoint.get('global_step')} with values that differ "
            f"from the checkpoint, applied from this step: {listed}"
        )
    callbacks = trainer_attributes(trainer).callbacks
    callback = next((c for c in callbacks if isinstance(c, CurrentOptimizerSettings)), None)
    if callback is None:
        callbacks.append(callback := CurrentOptimizerSettings())
    callback.hparams_changed = bool(changes)


def _weight_mismatch(module: L.LightningModule, saved: dict[str, Any]) -> str:
    """The first tensor whose name or shape differs between ``module`` and ``saved``; ``""``."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in saved.items()}
    for key in sorted(own.keys() ^ theirs.keys()):
        return f"{key} is only in the {'checkpoint' if key in theirs else 'model'}"
    for key in sorted(own):
        if own[key] != theirs[key]:
            return f"{key}: checkpoint {list(theirs[key])}, model {list(own[key])}"
    return ""


class CurrentOptimizerSettings(L.Callback):
    """After a restore, the optimizer's hyperparameters are the run's, its state the checkpoint's.

    ``on_fit_start`` (optimizers configured from the run's values, not yet restored) records
    each param group's hyperparameters and each scheduler's base learning rates; after
    Lightning restored the checkpoint's (``on_train_start``), they are put back where they
    differ, and each group's current learning rate is recomputed at the restored step.
    :func:`reconcile` adds this callback when a method resumes, and says whether the method's
    arguments changed; a new global batch (linear LR scaling) changes the base rates alone.
    """

    def __init__(self) -> None:
        self.hparams_changed = False
        self._groups: list[list[dict[str, Any]]] = []
        self._base_lrs: list[list[float] | None] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._groups = [
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            for opt in trainer.optimizers
        ]
        self._base_lrs = [
            list(getattr(c.scheduler, "base_lrs", None) or []) or None
            for c in trainer.lr_scheduler_configs
        ]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None or not self._groups:
            return
        if self.hparams_changed or self._base_lrs_changed(trainer):
            self._apply(trainer)
        self._groups, self._base_lrs = [], []

    def _base_lrs_changed(self, trainer: L.Trainer) -> bool:
        return any(
            base_lrs is not None and list(config.scheduler.base_lrs) != base_lrs
            for config, base_lrs in zip(trainer.lr_scheduler_configs, self._base_lrs, strict=True)
        )

    def _apply(self, trainer: L.Trainer) -> None:
        for optimizer, fresh in zip(trainer.optimizers, self._groups, strict=True):
            for group, values in zip(optimizer.param_groups, fresh, strict=True):
                group.update({k: v for k, v in values.items() if k != "lr"})
        scheduled = set()
        for config, base_lrs in zip(trainer.lr_scheduler_configs, self._base_lrs, strict=True):
            if base_lrs is not None:
                _rebase(config.scheduler, base_lrs)
                scheduled.add(id(config.scheduler.optimizer))
        for optimizer, fresh in zip(trainer.optimizers, self._groups, strict=True):
            if id(optimizer) not in scheduled:  # no schedule: the configured rate as it is
                for group, values in zip(optimizer.param_groups, fresh, strict=True):
                    group["lr"] = values["lr"]
        lrs = sorted({f"{g['lr']:.4g}" for opt in trainer.optimizers for g in opt.param_groups})
        rank_zero_info(
            f"resumed at step {trainer.global_step} with this run's optimizer settings; "
            f"learning rates of the param groups now {', '.join(lrs)}"
        )


def _rebase(scheduler: Any, base_lrs: list[float]) -> None:
    """Give ``scheduler`` new base learning rates and set the groups' current ones from them."""
    old = list(scheduler.base_lrs)
    scheduler.base_lrs = list(base_lrs)
    step = scheduler.last_epoch
    groups = scheduler.optimizer.param_groups
    for i, (group, base) in enumerate(zip(groups, base_lrs, strict=True)):
        if isinstance(scheduler, LambdaLR):
            group["lr"] = base * scheduler.lr_lambdas[i](step)
        else:  # schedules that multiply the base rate: keep the restored factor
            group["lr"] = group["lr"] * base / old[i] if old[i] else base
    scheduler._last_lr = [g["lr"] for g in groups]
