"""Stop on SIGTERM, SIGUSR1 or Ctrl-C at the next batch boundary with a checkpoint saved.

Lightning 2.6 already turns SIGTERM into a flag (``trainer.received_sigterm``) that its loops
check after every training and validation batch, and then raise ``SIGTERMException``, a
``SystemExit`` with no code: the process exits with status 0 and nothing is saved.
:class:`GracefulStop` builds on that flag:

* SIGINT (the first Ctrl-C) and SIGUSR1 set the same flag, so every signal stops at the same
  consistent point (a second Ctrl-C raises ``KeyboardInterrupt`` at once, without a checkpoint).
  Under SLURM with ``SLURMEnvironment(auto_requeue=True)`` (Lightning's default when it detects
  SLURM) SIGUSR1 is left to Lightning, which saves ``hpc_ckpt_<n>.ckpt`` and requeues the job.
* When the loop raises, the state is saved atomically as ``last.ckpt`` in the folder of the
  first ``ModelCheckpoint`` with ``save_last`` (``<default_root_dir>/checkpoints`` in the CLI),
  the newest ``last*.ckpt``, so ``--ckpt_path last`` resumes from it.
* The exit status becomes ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT, 138 for
  SIGUSR1), so a scheduler sees an interrupted job, not a success.

Long callback work checks ``trainer.received_sigterm`` between batches (the kNN monitor's bank),
so a signal during it stops within one batch. The DataModule's loader workers ignore the stop
signals (:func:`ignore_stop_signals`), so that a signal sent to the whole job does not kill them
under the main process.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from lightning_ssl.lightning_types import trainer_attributes

log = logging.getLogger(__name__)

#: Signals that stop a run gracefully (SIGUSR1 is absent on Windows).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name)
)


def signal_checkpoint_path(trainer: L.Trainer) -> str:
    """Where a signal's checkpoint goes: ``last.ckpt`` of the first ``ModelCheckpoint`` that
    keeps one, else ``<default_root_dir>/checkpoints/last.ckpt``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            name = callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
            return os.path.join(callback.dirpath, name)
    return os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of a ``DataLoader``: its worker processes ignore SIGTERM, SIGINT and
    SIGUSR1. A scheduler (``scancel``, preemption) and Ctrl-C signal every process of a job;
    torch's workers die on a SIGTERM that is not their parent's, and the main process then
    fails wherever it is (mid optimizer step) with "DataLoader worker ... killed". The main
    process decides; it shuts its workers down as it exits.

    Examples:
        >>> DataLoader(data, num_workers=8, worker_init_fn=ignore_stop_signals)  # doctest: +SKIP
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _worker_stop if signum == signal.SIGTERM else signal.SIG_IGN)


#: A loader worker ends at most this long after a SIGTERM, even if nobody shuts it down (the
#: parent's own ``terminate()`` at exit is a SIGTERM too: ignoring it for good could hang there).
WORKER_GRACE_S = 120


def _worker_stop(signum: int, frame: FrameType | None) -> None:
    signal.alarm(WORKER_GRACE_S)  # SIGALRM's default action ends the process


class _IgnoreStopSignals:
    """``ignore_stop_signals`` then the loader's own ``worker_init_fn`` (picklable)."""

    def __init__(self, inner: Callable[[int], None] | None) -> None:
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        ignore_stop_signals(worker_id)
        if self.inner is not None:
            self.inner(worker_id)


def _protect_workers(make_loader: Callable[[], Any]) -> Callable[[], Any]:
    @functools.wraps(make_loader)
    def protected() -> Any:
        loader = make_loader()
        for each in loader if isinstance(loader, (list, tuple)) else [loader]:
            init = getattr(each, "worker_init_fn", None)
            if isinstance(each, DataLoader) and not isinstance(init, _IgnoreStopSignals):
                each.worker_init_fn = _IgnoreStopSignals(init)
        return loader

    return protected


def _end_loader_workers() -> None:
    """After the save: end the loader workers still running (they ignore SIGTERM, so the
    exit's multiprocessing clean-up, a SIGTERM then a join, would wait ``WORKER_GRACE_S`` for
    them). Loader workers are daemonic children, which that clean-up terminates anyway; a
    started ``Process`` no longer holds its target in the parent, so it cannot tell them apart.
    """
    workers = [p for p in multiprocessing.active_children() if p.daemon]
    main = threading.current_thread() is threading.main_thread()
    if workers and main and hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would raise mid-exit
    for worker in workers:
        worker.kill()


class GracefulStop(L.Callback):
    """Save a checkpoint and exit with ``128 + signum`` on SIGTERM, SIGUSR1 or the first Ctrl-C.

    The CLI adds it to every ``fit``. The state saved is the one after the last completed batch
    (a validation interrupted by the signal is not re-run on resume).

    Examples:
        >>> trainer = L.Trainer(callbacks=[GracefulStop()])  # doctest: +SKIP
        >>> # kill -TERM <pid>: checkpoints/last.ckpt written, exit status 143
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The loaders are built later (the validation one, kept alive, before training starts):
        # make the DataModule's loaders start workers that leave the signals to this process.
        datamodule = trainer_attributes(trainer).datamodule
        for name in ("train_dataloader", "val_dataloader", "train_eval_dataloader"):
            method = getattr(datamodule, name, None)
            if callable(method) and not hasattr(method, "__wrapped__"):
                setattr(datamodule, name, _protect_workers(method))

    # ------------------------------------------------------------------ handlers
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.received = signal.Signals(signum)
        log.warning(
            "received %s: stopping after the current batch and saving a checkpoint%s",
            self.received.name,
            " (press Ctrl-C again to stop at once, without one)" if signum == signal.SIGINT else "",
        )
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, frame)  # Lightning's handler: sets the flag, notifies other ranks
        elif self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True

    def _lightning_owns(self, signum: int, trainer: L.Trainer) -> bool:
        environment = trainer._accelerator_connector.cluster_environment  # as Lightning reads it
        if not (isinstance(environment, SLURMEnvironment) and environment.auto_requeue):
            return False
        return signum == (environment.requeue_signal or signal.SIGUSR1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning registered its SIGTERM handler (which we chain): sanity checking
        # keeps Lightning's handling alone (nothing trained yet, nothing to save).
        if threading.current_thread() is not threading.main_thread():
            return
        self._trainer, self.received = trainer, None
        for signum in STOP_SIGNALS:
            if not self._lightning_owns(signum, trainer):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _restore(self) -> None:
        # Only where our handler is still installed: at teardown Lightning has already put back
        # the SIGTERM handler it found, and re-installing its own (the one we chained) would
        # leave a finished run's handler in place, holding its Trainer and model alive and
        # swallowing the next SIGTERM of the process (a notebook, a script that fits twice).
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                if signal.getsignal(signum) == self._handle:
                    signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous, self._trainer = {}, None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    # ------------------------------------------------------------------ stop
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if not isinstance(exception, SIGTERMException):
            return
        signum = self.received or signal.SIGTERM  # SIGTERM seen by Lightning's handler alone
        if not trainer.sanity_checking:
            path = signal_checkpoint_path(trainer)
            trainer.save_checkpoint(path)
            log.warning(
                "%s: saved %s at global step %d; resume with --ckpt_path last",
                signum.name,
                path,
                trainer.global_step,
            )
        _end_loader_workers()
        exception.code = 128 + int(signum)
