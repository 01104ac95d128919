"""Run ``lightning-ssl ARGS`` as a user types it, in this process or in a fresh one.

:func:`lightning_ssl_in_process` calls the console script's own ``main`` (what
``python -m lightning_ssl`` runs) and returns what the interpreter would have returned: the exit
status and the text of stdout and stderr, a ``SystemExit("message")`` printed to stderr with
status 1, an uncaught exception as its traceback with status 1. It saves the 5-10 s of imports
each fresh process pays; tests whose subject is a fresh process (signals, kills, two processes,
environment) use :func:`lightning_ssl_subprocess`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path

from lightning_ssl.commands import main


def lightning_ssl_in_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``lightning-ssl ARGS`` run by ``main`` in ``cwd`` with ``env`` added to the environment."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(_environment(env or {}))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.callback(_finish_wandb)
        code = _exit_status(list(args), err)
    argv = ["lightning-ssl", *args]
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _exit_status(argv: list[str], err: io.StringIO) -> int:
    """What the interpreter makes of ``main(argv)``: its exit status (and stderr text)."""
    try:
        main(argv)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        err.write(f"{done.code}\n")
        return 1
    except Exception:  # reported as the interpreter does; the test judges it
        err.write(traceback.format_exc())
        return 1
    return 0


def _finish_wandb() -> None:
    """Close a W&B run left open and drop W&B's process-wide setup, as the exit of a fresh
    process does: else the next command's WandbLogger logs into the open run, or runs with the
    settings this command's environment gave the setup (``WANDB_MODE=disabled`` makes no run)."""
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def lightning_ssl_subprocess(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m lightning_ssl ARGS`` in a fresh process, with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_ssl", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
