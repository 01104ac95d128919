"""Which class a checkpoint is rebuilt with: a registry by name, never an import path.

:func:`known_classes` holds the methods of :mod:`lightning_ssl.methods`, the evaluations of
:mod:`lightning_ssl.eval`, and subclasses of ``SSLMethod`` the user's code already defined,
looked up by the name the checkpoint records. A module path written in the file
(LightningCLI's ``_class_path``) is never imported.

Examples:
    >>> from lightning_ssl.checkpoint import load_checkpoint
    >>> checkpoint = load_checkpoint("runs/simclr-cifar10/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> checkpoint_class(checkpoint).__name__  # doctest: +SKIP
    'SimCLR'
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from lightning.pytorch import LightningModule

from lightning_ssl.checkpoint import CheckpointClassError, checkpoint_method
from lightning_ssl.nn.pretrained_weights import skipping_pretrained

_EVALUATIONS = {
    "LinearEvaluation": "lightning_ssl.eval.linear",
    "KNNEvaluation": "lightning_ssl.eval.knn_eval",
    "FineTune": "lightning_ssl.eval.finetune",
}


def known_classes() -> dict[str, type[LightningModule]]:
    """Classes a checkpoint may be rebuilt with, by name: the package's methods and
    evaluations, then ``SSLMethod`` subclasses already defined in this process (a user's own
    method). Nothing is imported because a file asked for it."""
    import importlib

    from lightning_ssl import methods

    classes: dict[str, type[LightningModule]] = {}
    for cls in _subclasses(methods.SSLMethod):
        classes.setdefault(cls.__name__, cls)
    for name in methods.__all__:
        classes[name] = getattr(methods, name)
    for name, module in _EVALUATIONS.items():
        classes[name] = getattr(importlib.import_module(module), name)
    return classes


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def checkpoint_class(checkpoint: dict[str, Any]) -> type[LightningModule]:
    """The registered class that wrote ``checkpoint`` (see :func:`known_classes`).

    Raises:
        CheckpointClassError: the checkpoint names no class, or one that is not registered.
    """
    name = checkpoint_method(checkpoint)
    if name is None:
        raise CheckpointClassError(
            "the checkpoint names no lightning-ssl method (no 'lightning_ssl_method' entry and "
            "no '_class_path' hyperparameter): is it a pretraining checkpoint?"
        )
    classes = known_classes()
    if name not in classes:
        raise CheckpointClassError(
            f"checkpoint class {name!r} is not a lightning-ssl method or evaluation (known: "
            f"{', '.join(sorted(classes))}); a method of your own must be imported (defined) "
            "before its checkpoint is loaded"
        )
    return classes[name]


def rebuild(checkpoint: dict[str, Any], cls: type[LightningModule] | None = None) -> Any:
    """``cls`` (default: :func:`checkpoint_class`) built from the checkpoint's hyperparameters,
    with its weights loaded strictly, on CPU: ``load_from_checkpoint`` without reading the file
    again and without an instantiator or class path taken from it."""
    cls = cls or checkpoint_class(checkpoint)
    hparams = {
        k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")
    }
    parameters = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        hparams = {k: v for k, v in hparams.items() if k in parameters}
    with skipping_pretrained():  # the checkpoint's weights replace a pretrained start
        model = cls(**hparams)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model
