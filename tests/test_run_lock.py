"""Two real CLI processes on one run folder, and the run after a ``kill -9``.

Before: the second run crashed on the shared ``last.ckpt.tmp``, the CSV logs merged and
``config.yaml`` stopped matching ``run.json``; after a SIGKILL ``run.json`` said "running"
forever, ``*.tmp`` files stayed, and a truncated newest ``last*.ckpt`` made ``--ckpt_path last``
crash."""

from __future__ import annotations

import json
import os
import shutil
import signal

from lightning_ssl.callbacks.run_info import file_sha256
from lightning_ssl.run_lock import LOCK_FILE
from tests.test_signals import (
    PROGRESS,
    STEPS,
    fit_args,
    global_step,
    newest_last,
    resume_to_the_end,
    run_json,
    start,
    wait_for_step,
)


def test_a_second_process_on_the_run_folder_is_refused(cifar10_dir, tmp_path):
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    # Long enough to be still training while the second process starts; stopped by SIGTERM.
    long = [*PROGRESS, "--trainer.max_epochs=1000"]
    first = start(fit_args(cifar10_dir, tmp_path, *long), tmp_path, first_log)
    wait_for_step(first, tmp_path / "checkpoints", 2, first_log)
    config = tmp_path / "csv" / "version_0" / "config.yaml"
    config_hash = file_sha256(config)

    # A plain second fit is refused by the run folder's own check (it holds a run); a resume,
    # the one that would write beside the running process, gets as far as the lock.
    second = start(
        fit_args(cifar10_dir, tmp_path, *PROGRESS, "--ckpt_path=last"), tmp_path, second_log
    )
    assert second.wait(timeout=300) != 0
    out = second_log.read_text()
    assert f"RunFolderBusyError: run folder {tmp_path} is in use by another training" in out
    assert f"(pid {first.pid} on host " in out
    assert "--trainer.default_root_dir" in out and f"kill -TERM {first.pid}" in out
    assert first.poll() is None  # the first run goes on, its files untouched
    assert file_sha256(config) == config_hash == run_json(tmp_path)["config_hash"]
    assert not (tmp_path / "csv" / "version_1").exists()

    first.send_signal(signal.SIGTERM)
    # A batch and a checkpoint save on a loaded 2-core machine: minutes, not seconds.
    assert first.wait(timeout=300) == 128 + signal.SIGTERM, first_log.read_text()[-3000:]
    assert json.loads((tmp_path / LOCK_FILE).read_text() or "{}") == {}  # released


def test_after_kill9_the_next_run_cleans_up_and_skips_a_corrupt_last(cifar10_dir, tmp_path):
    log = tmp_path / "killed.log"
    proc = start(fit_args(cifar10_dir, tmp_path, *PROGRESS), tmp_path, log)
    wait_for_step(proc, tmp_path / "checkpoints", STEPS // 2 + 2, log)  # past epoch 0's end
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert run_json(tmp_path)["status"] == "running"  # what a SIGKILL leaves
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == proc.pid

    folder = tmp_path / "checkpoints"
    stale = folder / f"last.ckpt.{proc.pid}.0a1b2c3d.tmp"  # a save cut by the kill
    stale.write_bytes(b"PK\x03\x04 half")
    newest = newest_last(folder)
    # An older intact last*.ckpt beside it (as a second checkpoint callback with save_last
    # writes): the one to fall back to.
    previous = folder / "last-v9.ckpt"
    shutil.copy2(newest, previous)
    os.utime(previous, ns=(newest.stat().st_mtime_ns - 10**9,) * 2)
    newest.write_bytes(newest.read_bytes()[:1000])  # e.g. a disk that filled up
    os.utime(newest)
    previous_step = global_step(previous)

    out = resume_to_the_end(cifar10_dir, tmp_path)
    assert f"the newer {newest} is unreadable (truncated or not a checkpoint" in out
    assert f"resuming from the previous good checkpoint {previous} instead" in out
    assert f"Restoring states from the checkpoint path at {previous}" in out
    assert previous_step >= STEPS // 2
    assert f"taking over the lock of pid {proc.pid} on " in out
    assert f"removed {stale}" in out and not stale.exists()
    killed = json.loads((tmp_path / "csv" / "version_0" / "run.json").read_text())
    assert killed["status"] == "killed" and killed["pid"] == proc.pid
    assert run_json(tmp_path)["status"] == "finished"  # the resumed run's own record
