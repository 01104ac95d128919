"""Messages a person can act on: config errors in one line (the key, what was expected, a "did you
mean"), data errors without a traceback naming the CLI flag, and known third-party noise
filtered (never this project's own warnings).

Examples:
    >>> concise_error('Parser key "x":\\n Expected a <class \\'int\\'>. Got value: y')
    "--x: expected int, got 'y'"
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

#: Warnings of other packages that every run printed and no user can act on.
NOISE = (
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*pkg_resources is deprecated.*",
    r".*The `srun` command is available on your system.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*GPU available but not used.*",
    # a resumed run writes into its own checkpoint folder by design
    r".*Checkpoint directory .* exists and is not empty.*",
)
#: Log lines of Lightning that advertise rather than inform.
NOISY_LOG_LINES = ("💡 Tip:",)
NOISY_MODULES = ("wandb", "pydantic", "jsonargparse", "torch.utils._pytree", "google.protobuf")


def filter_third_party_noise() -> None:
    """Silence known third-party warnings: deprecations raised inside other packages and the
    messages listed in :data:`NOISE`. Warnings raised by ``lightning_ssl`` are left alone."""
    for module in NOISY_MODULES:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message, module=r"(?!lightning_ssl)")
    for handler in logging.getLogger("lightning.pytorch").handlers:
        if not any(isinstance(f, _NoisyLines) for f in handler.filters):
            handler.addFilter(_NoisyLines())


class _NoisyLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISY_LOG_LINES)


_OPTION = re.compile(r"Option '([\w.]+)' is not accepted")
_KEY_NOT_EXPECTED = re.compile(r"Key '([\w.]+)' is not expected")
_CLASS_PATH = re.compile(r"Problem with given class_path '([\w.]+)'")
_PARSER_KEY = re.compile(r'Parser key "([\w.]+)"')
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>\. Got value: (.*)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (\S+)", re.IGNORECASE)


def _init_parameters(class_path: str) -> list[str]:
    """Constructor parameters of an already imported class (never imports anything)."""
    module_name, _, name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module_name), name, None)
    names: list[str] = []
    for klass in getattr(cls, "__mro__", ()):
        if "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [n for n in dict.fromkeys(names) if n != "self"]


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def concise_error(message: str, options: list[str] | None = None) -> str:
    """One line out of a jsonargparse error: the key, what was expected, a close match."""
    section = next(iter(_PARSER_KEY.findall(message)), "")
    class_path = next(iter(_CLASS_PATH.findall(message)), None)
    for pattern in (_OPTION, _KEY_NOT_EXPECTED):
        if found := pattern.search(message):
            key = found.group(1)
            prefix = f"--{section}.init_args." if class_path else "--"
            known = _init_parameters(class_path) if class_path else []
            where = f" of {class_path.rsplit('.', 1)[-1]}" if class_path else ""
            return f"{prefix}{key}: unknown option{where}{_did_you_mean(key, known)}"
    if found := _EXPECTED.search(message):
        keys = _PARSER_KEY.findall(message)
        key = keys[-1] if keys else section
        full = f"{section}.init_args.{key}" if class_path and key != section else key
        return f"--{full}: expected {found.group(1)}, got {found.group(2).strip()!r}"
    if found := _UNRECOGNIZED.search(message):
        option = found.group(1).split("=", 1)[0]
        return f"{option}: unknown option{_did_you_mean(option, options or [])}"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    jargon = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "- Expected a")
    useful = [ln.lstrip("- ") for ln in lines if not ln.startswith(jargon)]
    return " ".join(useful[:3]) if useful else message


class ConciseArgumentParser(LightningArgumentParser):
    """LightningCLI's parser printing the real error in one line (the usage block only on
    ``--help``); ``exit_on_error=False`` parsers still raise as before."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or self
        if not self.exit_on_error:
            super().error(message, ex)
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        # "__main__.py fit" under python -m: name the command as the user knows it.
        words = parser.prog.replace(" [options]", "").split()
        prog = "lightning-ssl" + (f" {words[-1]}" if len(words) > 1 else "")
        sys.stderr.write(f"{prog}: error: {concise_error(message, options)}\n")
        sys.stderr.write(f"(every option: {prog} --help)\n")
        raise SystemExit(2)


def data_error_message(error: BaseException, subcommand: str) -> str | None:
    """One line for a missing-data error raised by :mod:`lightning_ssl.data`, naming the CLI
    flags; ``None`` for any other error (which keeps its traceback)."""
    if not isinstance(error, FileNotFoundError):
        return None
    frames = _traceback_files(error)
    if not any(Path("lightning_ssl", "data").as_posix() in f for f in frames[-3:]):
        return None
    text = str(error).replace("pass download=True", "pass --data.init_args.download true")
    text = text.replace("download=True", "--data.init_args.download true")
    return (
        f"lightning-ssl {subcommand}: data error: {text} "
        "(choose the folder with --data.init_args.data_dir)"
    )


def _traceback_files(error: BaseException) -> list[str]:
    files, tb = [], error.__traceback__
    while tb is not None:
        files.append(Path(tb.tb_frame.f_code.co_filename).as_posix())
        tb = tb.tb_next
    return files


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user's input causes whose message says the cause and the fix."""
    from lightning_ssl.checkpoint import CheckpointClassError, UnsafeCheckpointError
    from lightning_ssl.resume_hparams import ResumeMismatchError
    from lightning_ssl.validation import InvalidValueError

    return (UnsafeCheckpointError, CheckpointClassError, ResumeMismatchError, InvalidValueError)
