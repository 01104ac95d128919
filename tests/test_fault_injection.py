"""Fault injection: a 2-worker CLI run killed with SIGKILL five times, each time restarted with
the same command and ``--ckpt_path last_if_exists`` (a requeued job's), ends with the
uninterrupted run's weights, optimizer, schedule and online probe bit for bit.

The kills (the whole process group: the trainer and its loader workers, as a node failure or a
scheduler would) land at moments drawn with a fixed seed, and two of them at chosen places:

1. a random moment after 2 or 3 training batches of the fresh run;
2. during a checkpoint write (the run is frozen with SIGSTOP as soon as a ``*.tmp`` appears,
   killed if the file is still being written, else resumed until the next write);
3. during the end-of-epoch validation (frozen on the ``validation`` event, killed if it has
   not ``validated`` yet);
4. a random moment 1-4 s after the start (start-up, restore, sanity check or the first steps);
5. a random moment after 1 or 2 training batches.

The run learns where it is from ``tests.fault_points.FaultPoints`` (a callback writing events
to a file); the reference run has it too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.resume_runs import (
    EPOCHS,
    REPO,
    STEPS,
    assert_bitwise_equal,
    cli_args,
    final_checkpoints,
    trained_state,
)

DEADLINE_S = 240  # per process; a tiny run takes ~10 s on an idle 2-core machine


class Run:
    """One ``lightning_ssl fit`` process in its own process group, with its event log."""

    def __init__(self, args: list[str], root: Path, name: str) -> None:
        self.events = root / "events.log"
        self.leash = root / "events.log.hold"  # FaultPoints' (an earlier process's is removed)
        self.leash.unlink(missing_ok=True)
        self.seen = len(self.lines())  # events of earlier processes in this folder
        self.log = root / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "WANDB_MODE": "disabled",
            "PYTHONWARNINGS": "ignore",
            "OMP_NUM_THREADS": "1",
        }
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lightning_ssl", *args],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def hold_after(self, batches: int) -> None:
        """The process waits after its ``batches``-th training batch until killed. Written
        right after the start: the process needs seconds to import and load before a batch."""
        tmp = self.leash.with_suffix(".tmp-hold")
        tmp.write_text(str(batches))
        tmp.replace(self.leash)

    def lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    def new_events(self) -> list[str]:
        return self.lines()[self.seen :]

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # the run already ended
            os.killpg(self.proc.pid, sig)

    def wait_for(self, condition: Callable[[], bool], poll_s: float = 0.002) -> None:
        """Poll until ``condition()``; fail with the log if the run ends or takes too long."""
        while not condition():
            if self.proc.poll() is not None or time.monotonic() - self.started > DEADLINE_S:
                self.signal(signal.SIGKILL)
                pytest.fail(f"run ended before its kill point:\n{self.log.read_text()[-3000:]}")
            time.sleep(poll_s)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc.wait(timeout=60) == -signal.SIGKILL

    def freeze_and_kill_if(self, still: Callable[[], bool]) -> bool:
        """Stop the process group; kill it if ``still()`` holds while it is frozen."""
        self.signal(signal.SIGSTOP)
        if still():
            self.kill()
            return True
        self.signal(signal.SIGCONT)
        return False


def _batches(run: Run) -> int:
    return sum(line.startswith("batch") for line in run.new_events())


def _kill_after_batches(run: Run, rng: random.Random, low: int, high: int) -> str:
    count = rng.randint(low, high)
    run.hold_after(count + 1)  # the kill lands in batch count + 1 or while held after it
    run.wait_for(lambda: _batches(run) >= count)
    time.sleep(rng.uniform(0.0, 0.3))
    run.kill()
    return f"after {count} batches"


def _kill_during_checkpoint_write(run: Run, rng: random.Random) -> str:
    folder = run.events.parent / "checkpoints"
    writing = lambda: any(folder.glob("*.tmp"))  # noqa: E731
    while True:
        run.wait_for(writing, poll_s=0.0005)
        if run.freeze_and_kill_if(writing):
            assert any(folder.glob("*.tmp")), "the kill did not interrupt a checkpoint write"
            return "during a checkpoint write"


def _kill_during_validation(run: Run, rng: random.Random) -> str:
    validating = lambda: run.new_events()[-1:] == ["validation"]  # noqa: E731
    while True:
        run.wait_for(validating)
        if run.freeze_and_kill_if(validating):
            return "during validation"


def _kill_after_random_time(run: Run, rng: random.Random) -> str:
    delay = rng.uniform(1.0, 4.0)
    run.hold_after(2)  # a fast machine may be training by then, but not finishing
    run.wait_for(lambda: time.monotonic() - run.started > delay, poll_s=0.01)
    run.kill()
    return f"{delay:.1f} s after the start"


KILLS = [
    lambda run, rng: _kill_after_batches(run, rng, 2, 3),
    _kill_during_checkpoint_write,
    _kill_during_validation,
    _kill_after_random_time,
    lambda run, rng: _kill_after_batches(run, rng, 1, 2),
]


def _lasts(folder: Path) -> dict[Path, int]:
    """Global step of each ``last*.ckpt`` (complete files only: saves are atomic)."""
    return {
        path: torch.load(path, map_location="cpu", weights_only=True)["global_step"]
        for path in folder.glob("last*.ckpt")
    }


def _history(root: Path) -> str:
    """What the processes of the faulted run did, for a failure message (the kills land at
    moments that differ from machine to machine): the events, where ``start S E`` begins each
    process that got as far as training (at global step S, epoch E)."""
    events = root / "events.log"
    return " | ".join(events.read_text().splitlines()) if events.exists() else "no events"


def _finish(run: Run) -> None:
    code = run.proc.wait(timeout=DEADLINE_S)
    assert code == 0, run.log.read_text()[-3000:]


def _args(data_dir: Path, root: Path) -> list[str]:
    return [
        *cli_args(data_dir, root),
        "--trainer.callbacks+=tests.fault_points.FaultPoints",
        f"--trainer.callbacks.path={root / 'events.log'}",
    ]


@pytest.fixture(scope="module")
def uninterrupted(cifar10_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The trained state of the same run, never interrupted."""
    straight = tmp_path_factory.mktemp("straight")
    _finish(Run(_args(cifar10_dir, straight), straight, "straight"))
    (expected_path, *_) = final_checkpoints(straight)
    expected = trained_state(expected_path)
    assert expected["global_step"] == STEPS
    return expected


def test_five_sigkills_then_resume_end_with_the_uninterrupted_weights(
    cifar10_dir, tmp_path, uninterrupted
):
    faulted = tmp_path / "faulted"
    faulted.mkdir()
    expected = uninterrupted
    rng = random.Random(0)
    resume = [*_args(cifar10_dir, faulted), "--ckpt_path=last_if_exists"]
    done = []
    for number, kill in enumerate(KILLS, 1):
        run = Run(resume, faulted, f"killed-{number}")
        done.append(kill(run, rng))
    # Every batch of every killed process is one of the uninterrupted run's (its step and epoch).
    batches = [line.split() for line in faulted.joinpath("events.log").read_text().splitlines()]
    per_epoch = STEPS // EPOCHS
    assert all(
        int(step) <= STEPS and int(epoch) == (int(step) - 1) // per_epoch
        for kind, step, epoch in (b for b in batches if b[0] == "batch")
    ), _history(faulted)
    # The killed runs stopped mid-run; the newest ``last*.ckpt`` is the furthest state, and the
    # final run restores from it (merged from test_faults.py's single mid-epoch SIGKILL).
    before = _lasts(faulted / "checkpoints")
    assert before and max(before.values()) < STEPS, (before, done, _history(faulted))
    newest = max(before, key=lambda path: path.stat().st_mtime_ns)
    assert before[newest] == max(before.values()), before
    final = Run(resume, faulted, "final")
    _finish(final)
    assert f"Restoring states from the checkpoint path at {newest}" in final.log.read_text()
    assert not list((faulted / "checkpoints").glob("*.tmp")), "a killed save's file was left"

    finals = final_checkpoints(faulted)
    assert finals, "the resumed run wrote no checkpoint at its last step"
    for path in finals:
        assert_bitwise_equal(trained_state(path), expected, f"{path.name} after kills {done}")


def test_a_run_killed_in_two_epoch_end_validations_trains_each_epoch_once(
    cifar10_dir, tmp_path, uninterrupted
):
    """Killed in epoch 0's validation, its ``last.ckpt`` is the one written after epoch 0's last
    batch; the process resumed from it is killed in the final validation, and the run resumed
    again must find nothing left to train. Lightning 2.6 alone trained epoch 1 a second time
    there (steps 13-18, found by the five-kill test on CI): the process resumed at epoch 0's end
    never counted epoch 1 as started, so its checkpoints recorded epoch 1 as finished
    (``callbacks.EpochEndResume``, which the CLI adds)."""
    resume = [*_args(cifar10_dir, tmp_path), "--ckpt_path=last_if_exists"]
    per_epoch = STEPS // EPOCHS
    for step in (per_epoch, STEPS):
        run = Run(resume, tmp_path, f"killed-{step}")
        last_batch = f"batch {step} {(step - 1) // per_epoch}"
        run.wait_for(lambda: run.new_events()[-2:] == [last_batch, "validation"])  # noqa: B023
        assert run.freeze_and_kill_if(lambda: run.new_events()[-1] == "validation")  # noqa: B023
    final = Run(resume, tmp_path, "final")
    _finish(final)
    assert not [e for e in final.new_events() if e.startswith("batch")], _history(tmp_path)
    lasts = _lasts(tmp_path / "checkpoints")
    assert lasts and max(lasts.values()) == STEPS, (lasts, _history(tmp_path))
    for path in final_checkpoints(tmp_path):
        assert_bitwise_equal(trained_state(path), uninterrupted, path.name)
