"""Typed views of what Lightning sets dynamically: Trainer attributes, saved hyperparameters.

Lightning's connectors set ``trainer.callbacks``, ``trainer.datamodule``,
``trainer.fast_dev_run`` and ``trainer.log_every_n_steps`` while the Trainer is built, so the
``Trainer`` class declares none of them and a type checker rejects every use.
:func:`trainer_attributes` views a Trainer through a Protocol that declares them with the types
Lightning documents; :func:`eval_data` narrows the DataModule to what the kNN monitor, the
online probe and the offline evaluations read from it. ``hparams`` is typed as a plain
``MutableMapping`` or an ``AttributeDict``; :func:`saved_hparams` narrows it to the
``AttributeDict`` that ``save_hyperparameters`` stores, whose keys read as attributes.

Example:
    >>> import lightning as L
    >>> trainer = L.Trainer(fast_dev_run=2, logger=False, enable_progress_bar=False)
    >>> trainer_attributes(trainer).fast_dev_run
    2
    >>> saved_hparams(AttributeDict(lr=0.1)).lr
    0.1
    >>> eval_data(trainer)
    Traceback (most recent call last):
    ...
    TypeError: needs a DataModule with train_eval_dataloader() and num_classes, got NoneType
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from lightning.fabric.utilities.data import AttributeDict

if TYPE_CHECKING:
    import lightning as L
    from torch.utils.data import DataLoader


class TrainerAttributes(Protocol):
    """The attributes Lightning's connectors add to every ``Trainer``."""

    callbacks: list[L.Callback]
    datamodule: L.LightningDataModule | None
    fast_dev_run: int | bool
    log_every_n_steps: int


class EvalData(Protocol):
    """What evaluation during and after training reads from the DataModule."""

    @property
    def num_classes(self) -> int: ...

    def train_eval_dataloader(self) -> DataLoader[Any]: ...


def trainer_attributes(trainer: L.Trainer) -> TrainerAttributes:
    """``trainer`` typed with the attributes Lightning sets on it (the same object)."""
    return cast(TrainerAttributes, trainer)


def eval_data(trainer: L.Trainer) -> EvalData:
    """The trainer's DataModule, if it has the evaluation loader; a ``TypeError`` otherwise."""
    datamodule = trainer_attributes(trainer).datamodule
    if not callable(getattr(datamodule, "train_eval_dataloader", None)):
        raise TypeError(
            "needs a DataModule with train_eval_dataloader() and num_classes, got "
            f"{type(datamodule).__name__}"
        )
    return cast(EvalData, datamodule)


def saved_hparams(hparams: MutableMapping[Any, Any]) -> AttributeDict:
    """``hparams`` as the ``AttributeDict`` that ``save_hyperparameters`` stores."""
    if not isinstance(hparams, AttributeDict):
        raise TypeError(f"expected the hparams of save_hyperparameters, got {type(hparams)}")
    return hparams
