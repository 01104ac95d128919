"""Crash-safe checkpoint files: write to a temporary file beside the target, fsync, rename.

Lightning's ``TorchCheckpointIO`` serialises into memory and then commits through an fsspec
transaction, which writes a ``tempfile.mkstemp()`` file in ``$TMPDIR`` and ``shutil.move``-s it
over the target. When ``$TMPDIR`` is on another file system than the run folder (tmpfs ``/tmp``
and a network run folder is the common cluster layout) the move is a copy *into* ``last.ckpt``:
a process killed during that copy leaves a truncated ``last.ckpt`` and ``--ckpt_path last``
fails. Nothing is fsync-ed either, so a node crash can leave an empty file after the rename.

:class:`AtomicCheckpointIO` writes ``<path>.<pid>.<random>.tmp`` in the same folder (a name no
other writer shares), fsyncs it, and
``os.replace``-s it over ``<path>`` (atomic on POSIX and Windows), so a reader sees the previous
checkpoint or the new one, never a partial one. The CLI installs it by default.

It also loads local files through :func:`lightning_ssl.checkpoint.load_checkpoint`
(``weights_only=True``): resuming or validating a checkpoint never runs code from it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import secrets
import shutil
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH

from lightning_ssl.checkpoint import load_checkpoint

#: Suffix of the file being written; ``ModelCheckpoint`` only treats ``*.ckpt`` as checkpoints.
TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are write-to-temp, fsync, then rename.

    The checkpoint is serialised in memory first (as Lightning's own writer does), so a full
    disk fails in a plain ``write`` with one message naming the file and the bytes needed,
    instead of miniz's "unexpected pos"; the previous checkpoint is untouched either way.
    Remote paths (``s3://``, ...) keep Lightning's behaviour: object stores publish an object only
    when its upload completes.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = os.path.abspath(os.fspath(path))
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        write_atomic(path, data)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Lightning's restore, always ``weights_only`` (a local file that would run code is
        refused with :class:`~lightning_ssl.checkpoint.UnsafeCheckpointError`)."""
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().load_checkpoint(path, map_location, weights_only=True)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint(path, map_location=map_location)


def temp_name(path: str) -> str:
    """A temporary name beside ``path`` unique to this process and call:
    ``<path>.<pid>.<random>.tmp`` (two writers never share one)."""
    return f"{path}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def write_atomic(path: str, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a unique temporary file, fsync, rename.

    Raises:
        OSError: ``ENOSPC``/``EDQUOT`` as "no space left on device while writing ``path`` (N
            bytes needed, M free)"; ``path`` keeps its previous content.
    """
    folder = os.path.dirname(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(folder).free
            raise OSError(
                err.errno,
                f"no space left on device while writing {path} ({len(data):,} bytes needed, "
                f"{free:,} free in {folder}); the previous {os.path.basename(path)} is intact. "
                "Free space there (old checkpoints: ModelCheckpoint's save_top_k) or move the run "
                "folder (--trainer.default_root_dir)",
            ) from err
        raise
    _fsync_folder(folder)


def remove_stale_tmp(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files that killed writers left in ``folder`` (``*.ckpt.*.tmp``,
    ``*.ckpt.tmp``, ``.run.json.*.tmp``); call it only while holding the folder's lock
    (:mod:`lightning_ssl.run_lock`). Returns the paths removed.

    Examples:
        >>> remove_stale_tmp("runs/simclr-cifar10/checkpoints")  # doctest: +SKIP
        ['runs/simclr-cifar10/checkpoints/last.ckpt.4242.9f3a0c1e.tmp']
    """
    removed = []
    for pattern in ("*.ckpt*.tmp", ".run.json.*.tmp"):
        for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), pattern))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def _fsync_folder(folder: str) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
