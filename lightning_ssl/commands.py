"""The ``lightning-ssl`` command, light to start: tools are dispatched before Lightning loads.

``fit``/``validate``/``test``/``predict`` go to LightningCLI (:func:`lightning_ssl.cli.run_cli`);
``compare``, ``grid`` and ``export`` to their own modules (see :data:`TOOLS`), so that
``lightning-ssl compare runs/*`` does not pay for importing torch and Lightning's trainer.

Example:
    ``lightning-ssl compare runs/simclr-cifar10 runs/byol-cifar10``
"""

from __future__ import annotations

import importlib
import sys

#: Commands besides LightningCLI's: name -> "module:function", each function taking the
#: remaining arguments and returning an exit code.
TOOLS = {
    "compare": "lightning_ssl.compare:main",
    "grid": "lightning_ssl.grid:main",
    "export": "lightning_ssl.export:main",
}


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(own, extra)``: the arguments before ``--`` and those after it (passed to ``fit``).

    Example:
        >>> split_passthrough(["--config", "a.yaml", "--", "--trainer.max_epochs=1"])
        (['--config', 'a.yaml'], ['--trainer.max_epochs=1'])
    """
    if "--" not in argv:
        return list(argv), []
    split = argv.index("--")
    return list(argv[:split]), list(argv[split + 1 :])


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-ssl`` and ``python -m lightning_ssl``."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _dispatch(argv)
    except Exception as error:
        if isinstance(error, user_errors()):  # the user's file or value: one line, no traceback
            raise SystemExit(f"lightning-ssl: error: {error}") from None
        raise
    if code is not None:
        raise SystemExit(code)


def _dispatch(argv: list[str]) -> int | None:
    if argv and argv[0] in TOOLS:
        module_name, function = TOOLS[argv[0]].split(":")
        return getattr(importlib.import_module(module_name), function)(argv[1:])
    from lightning_ssl.cli import run_cli

    # None when they are sys.argv: LightningCLI warns when given both args and a command line.
    run_cli(None if argv == sys.argv[1:] else argv)
    return None


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user's input causes whose message says the cause and the fix."""
    from lightning_ssl.checkpoint import CheckpointClassError, UnsafeCheckpointError
    from lightning_ssl.resume_hparams import ResumeMismatchError
    from lightning_ssl.validation import InvalidValueError

    return (UnsafeCheckpointError, CheckpointClassError, ResumeMismatchError, InvalidValueError)
