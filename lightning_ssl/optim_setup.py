"""A method's optimizer and per-step LR schedule, assembled from its hyperparameters and trainer.

The peak learning rate is ``lr`` scaled by the global batch
(:func:`~lightning_ssl.optim.scaled_lr`), computed once, logged as ``effective_lr`` and never
written back over the user's value; each parameter group follows a linear warm-up then a cosine
decay per optimizer step, unless it asks for a fixed LR (SimSiam's predictor).

Examples:
    >>> factors = warmup_cosine_factors([{}, {"fixed_lr": True}], 2, 10, min_lr_ratio=0.0)
    >>> [round(f(0), 2) for f in factors], [round(f(9), 2) for f in factors]
    ([0.5, 1.0], [0.0, 1.0])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_ssl.optim import build_optimizer, parameter_groups, scaled_lr
from lightning_ssl.schedules import linear_warmup_cosine

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch import Trainer
    from lightning.pytorch.utilities.types import LRSchedulerConfigType, OptimizerLRSchedulerConfig


def global_batch_size(trainer: Trainer) -> int:
    """Images per optimizer step over all processes: devices x nodes x batch x accumulation."""
    batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch is None:  # plain dataloaders: configure_optimizers may run before they load
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        if (loader := trainer.train_dataloader) is not None:
            batch = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None)
    if batch is None:
        raise ValueError("cannot read the training batch size from the train dataloader")
    return int(batch * trainer.world_size * trainer.accumulate_grad_batches)


def step_budget(trainer: Trainer, warmup_epochs: float) -> tuple[int, int]:
    """``(total, warm-up)`` optimizer steps of the run; ``warmup_epochs`` may be fractional."""
    total_steps = int(trainer.estimated_stepping_batches)
    steps_per_epoch = max(1, trainer.num_training_batches // trainer.accumulate_grad_batches)
    return total_steps, round(warmup_epochs * steps_per_epoch)


def _factor(
    step: int, fixed: bool, warmup_steps: int, total_steps: int, end: float, start: float = 0.0
) -> float:
    if fixed:
        return 1.0
    # step + 1: the first optimizer step already moves the weights during warm-up.
    return linear_warmup_cosine(step + 1, warmup_steps, total_steps, start=start, end=end)


def warmup_cosine_factors(
    groups: list[dict[str, Any]],
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
    warmup_start_ratio: float = 0.0,
) -> list[Callable[[int], float]]:
    """One LR factor per group for ``LambdaLR``: warm-up (from ``warmup_start_ratio``, I-JEPA's
    ``start_lr / lr``) then cosine, or 1 with ``fixed_lr``."""
    return [
        functools.partial(
            _factor,
            fixed=group.get("fixed_lr", False),
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            end=min_lr_ratio,
            start=warmup_start_ratio,
        )
        for group in groups
    ]


def _announce(
    module: L.LightningModule,
    hp: Mapping[str, Any],
    batch: int,
    lr: float,
    warmup_steps: int,
    total_steps: int,
) -> None:
    """Say (rank 0) and log the batch arithmetic once: the user's ``lr`` stays as written."""
    rank_zero_info(
        f"{type(module).__name__}: lr {hp['lr']} x ({hp['lr_scaling']} rule, global batch "
        f"{batch}) = {lr:.4g}; {warmup_steps} warm-up steps of {total_steps}"
    )
    if module.logger is not None:
        module.logger.log_hyperparams({"effective_lr": lr, "global_batch_size": batch})


def assemble_optimizer(
    module: L.LightningModule,
    hp: Mapping[str, Any],
    overrides: dict[str, dict[str, Any]],
    no_decay_options: dict[str, Any],
) -> tuple[float, OptimizerLRSchedulerConfig]:
    """``(effective_lr, configure_optimizers() result)`` of a method with the base's options.

    Args:
        module: the method, attached to its trainer.
        hp: its hyperparameters ``optimizer``, ``lr``, ``lr_scaling``, ``weight_decay``,
            ``momentum``, ``warmup_epochs`` and ``min_lr_ratio`` (and, if present,
            ``warmup_start_ratio``: the warm-up's first LR over the peak, default 0).
        overrides: per-prefix group options (:func:`~lightning_ssl.optim.parameter_groups`).
        no_decay_options: options of the groups without weight decay.
    """
    trainer = module.trainer
    total_steps, warmup_steps = step_budget(trainer, hp["warmup_epochs"])
    batch = global_batch_size(trainer)
    lr = scaled_lr(hp["lr"], batch, hp["lr_scaling"])
    _announce(module, hp, batch, lr, warmup_steps, total_steps)
    groups = parameter_groups(
        module.named_parameters(),
        hp["weight_decay"],
        overrides,
        no_decay_options,
        decay_bias_and_norm=hp.get("decay_bias_and_norm", False),
        adapt_bias_and_norm=hp.get("adapt_bias_and_norm", False),
    )
    for group in groups:  # a group's "lr_scale" sets its peak LR relative to the others
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer = build_optimizer(
        hp["optimizer"],
        groups,
        lr,
        hp["weight_decay"],
        momentum=hp["momentum"],
        betas=tuple(hp.get("adamw_betas", (0.9, 0.999))),
        lars_preset=hp.get("lars_preset", "byol"),
        trust_coefficient=hp.get("trust_coefficient"),
    )
    start = hp.get("warmup_start_ratio", 0.0)
    factors = warmup_cosine_factors(groups, warmup_steps, total_steps, hp["min_lr_ratio"], start)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
    schedule: LRSchedulerConfigType = {"scheduler": scheduler, "interval": "step"}
    return lr, {"optimizer": optimizer, "lr_scheduler": schedule}
