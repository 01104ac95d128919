"""One training process per run folder: an OS lock on ``<default_root_dir>/.run.lock``.

Two ``fit`` runs writing into one folder overwrite each other's ``last.ckpt``, merge their CSV
logs and leave a ``config.yaml`` that matches neither ``run.json``. :class:`RunFolderLock` takes
an exclusive ``fcntl.flock`` on a lock file in the folder before anything is written there (its
``setup`` runs before LightningCLI's ``SaveConfigCallback``); a second process fails at once
with :class:`RunFolderBusyError`, naming the folder, the holder's pid and host, and the ways
out. The operating system drops the lock when its process ends, however it ends (even
SIGKILL), so a lock can never stay stale; the lock file keeps the holder's pid and host, and a
new holder that finds them from a process that did not release its lock (killed) warns and
takes over.

While holding the lock, the new run removes the temporary files a killed process left
(``*.ckpt.*.tmp``, ``.run.json.*.tmp``) and marks a ``run.json`` still saying ``running`` as
``killed``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ssl.callbacks.run_info import mark_killed
from lightning_ssl.checkpoint_io import remove_stale_tmp

try:
    import fcntl
except ImportError:  # Windows: no flock; the run goes unlocked with a warning
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Name of the lock file in the run folder.
LOCK_FILE = ".run.lock"


class RunFolderBusyError(RuntimeError):
    """Another live process holds the run folder's lock."""


def _holder(file: IO[str]) -> dict[str, Any]:
    file.seek(0)
    try:
        return json.loads(file.read() or "{}")
    except ValueError:
        return {}


def acquire(folder: str | Path) -> IO[str] | None:
    """Lock ``folder`` for this process; return the open lock file (keep it open to hold the
    lock), or ``None`` where the platform has no ``flock``.

    Raises:
        RunFolderBusyError: another live process holds the lock.

    Examples:
        >>> handle = acquire("runs/simclr-cifar10")  # doctest: +SKIP
        >>> release(handle)  # doctest: +SKIP
    """
    folder = Path(folder).absolute()
    if fcntl is None:
        log.warning("no fcntl.flock here: %s is not locked against a second run", folder)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    file = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the whole run)
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(file)
        file.close()
        raise RunFolderBusyError(_busy_message(folder, holder)) from None
    previous = _holder(file)
    if previous:
        log.warning(
            "run folder %s: taking over the lock of pid %s on %s (started %s), which ended "
            "without releasing it (killed)",
            folder,
            previous.get("pid"),
            previous.get("host"),
            previous.get("started"),
        )
    file.seek(0)
    file.truncate()
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.ctime()}
    file.write(json.dumps({**me, "command": sys.argv}))
    file.flush()
    return file


def release(file: IO[str] | None) -> None:
    """Empty the lock file (a clean end) and drop the lock."""
    if file is None or file.closed:
        return
    file.seek(0)
    file.truncate()
    file.flush()
    fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    file.close()


def _busy_message(folder: Path, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    return (
        f"run folder {folder} is in use by another training process (pid {pid} on host {host}, "
        f"started {holder.get('started', '?')}); two runs in one folder would overwrite each "
        "other's checkpoints, logs and config.yaml. Either give this run another folder "
        "(--trainer.default_root_dir DIR, and the loggers' save_dir), or wait for the other run "
        f"to end (kill -TERM {pid} on {host} stops it with a checkpoint saved)."
    )


class RunFolderLock(L.Callback):
    """Hold the lock of ``trainer.default_root_dir`` during ``fit`` (global rank 0), then clean
    what a killed earlier run left: stale ``*.tmp`` files and a ``run.json`` still ``running``.

    The CLI adds it first to every ``fit``, so that it runs before anything writes.

    Examples:
        >>> trainer = L.Trainer(default_root_dir="runs/a", callbacks=[RunFolderLock()])
        >>> # a second process on runs/a: RunFolderBusyError naming the folder and the pid
    """

    def __init__(self) -> None:
        self._file: IO[str] | None = None

    def lock(self, root: str | Path) -> None:
        """Take the lock now (the CLI does, before Lightning's ``setup`` creates the loggers'
        version folders), instead of in ``setup``."""
        if self._file is None:
            self._file = acquire(root)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        root = trainer.default_root_dir
        self.lock(root)
        folders = {os.path.abspath(root)}
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                folders.add(os.path.abspath(os.fspath(callback.dirpath)))
        for folder in sorted(folders):
            for path in remove_stale_tmp(folder):
                log.warning("removed %s, left by a run that was killed while writing it", path)
        for info in mark_killed(root):
            log.warning("%s said 'running' but its process is gone: marked 'killed'", info)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        release(self._file)
        self._file = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        release(self._file)
        self._file = None
