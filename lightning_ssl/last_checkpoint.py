"""``--ckpt_path last`` that skips a corrupt newest checkpoint, and "which checkpoint exists".

Lightning resolves ``last`` to the newest ``last*.ckpt`` of the ``ModelCheckpoint`` folders and
fails when that file is truncated (a disk that filled up under another writer, a copy cut short,
a file system that lost its tail in a crash). :func:`resolve_last` checks each candidate, newest
first, and falls back to the newest intact one with a warning naming both files.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not an intact ``torch.save`` file (a zip archive whose every member
    matches its CRC), or ``None`` when it is. Reads the whole file, never unpickles it.

    Example:
        >>> checkpoint_problem("runs/a/checkpoints/last.ckpt")  # doctest: +SKIP
        'truncated or not a checkpoint (File is not a zip file)'
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        return f"truncated or not a checkpoint ({err})"
    return f"corrupt: member {bad} fails its CRC check" if bad is not None else None


def last_candidates(trainer: L.Trainer) -> list[str]:
    """The ``last*.ckpt`` files of the trainer's ``ModelCheckpoint`` folders, newest first (the
    files Lightning chooses from for ``ckpt_path="last"``)."""
    found: set[str] = set()
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            found |= {os.fspath(p) for p in callback._find_last_checkpoints(trainer)}
    existing = [path for path in found if os.path.isfile(path)]
    return sorted(existing, key=lambda path: os.stat(path).st_mtime_ns, reverse=True)


def resolve_last(trainer: L.Trainer) -> str | None:
    """The newest intact ``last*.ckpt``, or ``None`` when there is none yet (a first run).

    Raises:
        RuntimeError: every candidate is corrupt (each is named with its problem).
    """
    candidates = last_candidates(trainer)
    problems = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            for bad, why in problems:
                log.warning(
                    "--ckpt_path last: the newer %s is unreadable (%s); resuming from the "
                    "previous good checkpoint %s instead",
                    bad,
                    why,
                    path,
                )
            return path
        problems.append((path, problem))
    if problems:
        listed = "; ".join(f"{path}: {why}" for path, why in problems)
        raise RuntimeError(
            f"--ckpt_path last: no intact checkpoint to resume from ({listed}); pass an "
            "earlier checkpoint file with --ckpt_path, or start afresh without it"
        )
    return None


def newest_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest checkpoint file that the trainer's ``ModelCheckpoint``s wrote or can resume
    from (``last*.ckpt`` and their tracked best/last paths), or ``None`` when none exists."""
    paths = set(last_candidates(trainer))
    for callback in trainer.checkpoint_callbacks:
        for name in ("last_model_path", "best_model_path"):
            if getattr(callback, name, "") and os.path.isfile(getattr(callback, name)):
                paths.add(getattr(callback, name))
    if not paths:
        return None
    return Path(max(paths, key=lambda path: os.stat(path).st_mtime_ns))
