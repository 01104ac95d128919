"""Loading checkpoints without running code from them: the project's one trust boundary.

A Lightning checkpoint is a pickle, and unpickling can call any function the file names (a
``__reduce__`` that runs a shell command). Every load in lightning-ssl goes through
:func:`load_checkpoint`: ``torch.load(weights_only=True)``, which rebuilds only tensors,
containers and plain values, plus the allow-list :data:`SAFE_TYPES`. A file that needs anything
else raises :class:`UnsafeCheckpointError` before any of its code runs.

The class a checkpoint is rebuilt with is looked up by the name it records
(:func:`checkpoint_method`) in :mod:`lightning_ssl.eval.registry`; a module path written in the
file (LightningCLI's ``_class_path``) is never imported.

Examples:
    >>> checkpoint = load_checkpoint("runs/simclr-cifar10/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> checkpoint_method(checkpoint)  # doctest: +SKIP
    'SimCLR'
"""

from __future__ import annotations

import os
import pathlib
import pickle
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import torch

#: Types besides tensors and plain values that checkpoints written by lightning-ssl may hold:
#: paths passed as hyperparameters (``data_dir=Path(...)``). Rebuilding a path runs no code.
SAFE_TYPES: tuple[type, ...] = (pathlib.PosixPath, pathlib.WindowsPath)

#: The offline evaluations, by class name, and the modules that define them.


class UnsafeCheckpointError(ValueError):
    """A file that ``weights_only`` loading refuses: it would build objects or run code."""


class CheckpointClassError(ValueError):
    """A checkpoint that names no known class, or another one than the run expects."""


def load_checkpoint(path: str | Path | IO[bytes], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with :data:`SAFE_TYPES` allowed.

    Raises:
        UnsafeCheckpointError: ``FILE is not a safe lightning-ssl checkpoint: <what it needs>``.

    Examples:
        >>> state = load_checkpoint("last.ckpt")  # doctest: +SKIP
        >>> state["global_step"]  # doctest: +SKIP
        1000
    """
    try:
        with _safe_globals():
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"{_name(path)} is not a safe lightning-ssl checkpoint: {_reason(error)}. Only "
            "tensors and plain values are loaded (torch.load weights_only=True); load it "
            "elsewhere only if you trust its author"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UnsafeCheckpointError(
            f"{_name(path)} is not a lightning-ssl checkpoint: it holds a "
            f"{type(checkpoint).__name__}, not a dict"
        )
    return checkpoint


class _safe_globals:
    """``torch.serialization.safe_globals(SAFE_TYPES)``; a process-wide allow-list on torch 2.4."""

    def __enter__(self) -> None:
        serialization = torch.serialization
        self._context: AbstractContextManager[object] | None = None
        if hasattr(serialization, "safe_globals"):
            self._context = serialization.safe_globals(list(SAFE_TYPES))
            self._context.__enter__()
        else:  # torch 2.4
            serialization.add_safe_globals(list(SAFE_TYPES))

    def __exit__(self, *exc: Any) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)


def _name(path: str | Path | IO[bytes]) -> str:
    return str(path) if isinstance(path, (str, os.PathLike)) else str(getattr(path, "name", path))


def _reason(error: pickle.UnpicklingError) -> str:
    """The part of torch's message that says what the file needs (a global, an opcode)."""
    for line in str(error).splitlines():
        if "nsupported" in line:  # "Unsupported global: ...", "Unsupported operand 149", ...
            line = line.replace("WeightsUnpickler error:", "").strip()
            return line.split(". Please")[0].rstrip(".")
    return "it holds objects other than tensors and plain values"


def checkpoint_method(checkpoint: dict[str, Any]) -> str | None:
    """The class name that wrote ``checkpoint``: saved by :class:`SSLMethod`, else the last part
    of the ``_class_path`` LightningCLI stores in the hyperparameters; ``None`` if unknown.

    Only the name is read: the module path is never imported.

    Examples:
        >>> checkpoint_method({"hyper_parameters": {"_class_path": "lightning_ssl.methods.BYOL"}})
        'BYOL'
    """
    if name := checkpoint.get("lightning_ssl_method"):
        return str(name)
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    return str(class_path).rsplit(".", 1)[-1] if class_path else None


def check_checkpoint_method(checkpoint: dict[str, Any], expected: str) -> None:
    """Raise naming both methods when ``checkpoint`` was written by another class.

    Examples:
        >>> check_checkpoint_method({"lightning_ssl_method": "BYOL"}, "BYOL")
    """
    written_by = checkpoint_method(checkpoint)
    if written_by is not None and written_by != expected:
        raise CheckpointClassError(
            f"checkpoint was written by {written_by}, not {expected}: load it with "
            f"--model {written_by} (or {written_by}.load_from_checkpoint)"
        )
