"""A callback that logs where a CLI run is, for tests that kill it at chosen points.

Its own small module (lightning and the standard library only): the CLI subprocesses of
``tests/test_fault_injection.py`` import it by class path, and must not pay for pytest or the
test helpers on every start.
"""

from __future__ import annotations

import os
import time

import lightning as L


class FaultPoints(L.Callback):
    """Appends what the run is doing to ``path``, one line per event, for a fault injector.

    Lines: ``start <global step> <epoch>`` when training starts (after a restore),
    ``batch <global step> <epoch>`` after each training batch, ``sanity`` or ``validation`` when
    a validation pass starts, ``validated`` when it ends. It changes nothing in the run (the
    uninterrupted reference run has it too).

    A leash for the injector: while the file ``<path>.hold`` holds a number ``N``, the process
    waits after its ``N``-th training batch until it is killed (or the file goes). A kill meant
    to land within a batch or two then cannot miss because the injector was scheduled late: on a
    loaded machine a tiny run once finished its last six batches in the window of a kill meant
    to land after two (CI-like rehearsal, test_five_sigkills_then_resume...).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.batches = 0  # this process's, not checkpointed

    def _held(self) -> bool:
        try:
            with open(self.path + ".hold") as file:
                return self.batches >= int(file.read())
        except (FileNotFoundError, ValueError):  # no leash, or not written in full yet
            return False

    def _write(self, line: str) -> None:
        with open(self.path, "a") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())

    def on_train_start(self, trainer, pl_module) -> None:
        self._write(f"start {trainer.global_step} {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._write(f"batch {trainer.global_step} {trainer.current_epoch}")
        self.batches += 1
        while self._held():
            time.sleep(0.01)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._write("sanity" if trainer.sanity_checking else "validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._write("validated")
