"""The ``lightning-ssl`` command, light to start: tools are dispatched before Lightning loads.

``fit``/``validate``/``test``/``predict`` go to LightningCLI (:func:`lightning_ssl.cli.run_cli`);
``compare``, ``grid`` and ``export`` to their own modules (see :data:`TOOLS`), so that
``lightning-ssl compare runs/*`` does not pay for importing torch and Lightning's trainer.

Examples:
    ``lightning-ssl compare runs/simclr-cifar10 runs/byol-cifar10``
"""

from __future__ import annotations

import gc
import importlib
import sys

#: Commands besides LightningCLI's: name -> "module:function", each function taking the
#: remaining arguments and returning an exit code.
TOOLS = {
    "compare": "lightning_ssl.compare:main",
    "grid": "lightning_ssl.grid:main",
    "export": "lightning_ssl.export:main",
    "configs": "lightning_ssl.packaged_configs:main",
}


#: ``lightning-ssl --help``: every command, LightningCLI's and the tools.
HELP = """usage: lightning-ssl COMMAND [options]

Training and evaluation (LightningCLI; `lightning-ssl COMMAND --help` lists every option):
  fit        train a method: --config configs/<method>/<dataset>.yaml --run_dir DIR
  validate   evaluate a checkpoint on the validation split (--ckpt_path last|FILE)
  test       evaluate a checkpoint on the test split
  predict    run a checkpoint's predict_step

Tools:
  compare    table and plots of runs: lightning-ssl compare RUN_DIR [RUN_DIR ...]
  grid       train a grid of values, one run folder each, then compare them
  export     write a checkpoint's backbone for use outside this project
  configs    list, locate or copy the shipped configs: lightning-ssl configs list simclr

A run is a folder (--run_dir, or --trainer.default_root_dir): checkpoints, CSV and W&B logs,
config.yaml and run.json together. Resume it with --ckpt_path last."""


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(own, extra)``: the arguments before ``--`` and those after it (passed to ``fit``).

    Examples:
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
        from lightning_ssl.cli_messages import user_errors

        if isinstance(error, user_errors()):  # the user's file or value: one line, no traceback
            raise SystemExit(f"lightning-ssl: error: {error}") from None
        raise
    if code is not None:
        raise SystemExit(code)


def _dispatch(argv: list[str]) -> int | None:
    if argv and argv[0] in TOOLS:
        module_name, function = TOOLS[argv[0]].split(":")
        return getattr(importlib.import_module(module_name), function)(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return 0 if argv else 2
    _run_lightning(argv, None if argv == sys.argv[1:] else argv)
    return None


def _freeze_imported_objects() -> None:
    """Put what the imports built (torch, Lightning, W&B: about 500,000 objects that live as
    long as the process) out of the cyclic garbage collector's sight. Each full collection, and
    above all the last one at exit, then skips them: a process's exit took 34-42 s instead of
    7 s on a loaded 2-core CPU. Only a process of its own freezes: a caller's objects stay
    collectable. A forked loader worker also copies fewer pages (no collector writes to them).
    """
    gc.freeze()


def _run_lightning(argv: list[str], args: list[str] | None) -> None:
    """LightningCLI, with the errors a user can fix printed in one line (no traceback)."""
    from lightning_ssl.cli import run_cli
    from lightning_ssl.cli_messages import data_error_message
    from lightning_ssl.run_folder import RunFolderError

    subcommand = argv[0]
    if args is None:  # this process runs this one command (not a caller's Python session)
        _freeze_imported_objects()
    try:
        # None when they are sys.argv: LightningCLI warns when given both args and a command line.
        run_cli(args)
    except RunFolderError as error:
        print(f"lightning-ssl {subcommand}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as error:
        message = data_error_message(error, subcommand)
        if message is None:
            raise
        print(message, file=sys.stderr)
        raise SystemExit(1) from None
