"""A run is a folder: where one run's checkpoints, logs, config and metadata live together.

Layout of a run folder ``R`` (the trainer's ``default_root_dir``, or ``--run_dir``)::

    R/run.json                       what ran and what it cost (RunInfo), plus ``evaluations``
    R/checkpoints/last.ckpt          what ``--ckpt_path last`` resumes
    R/csv/version_<n>/metrics.csv    the training history; one version per process (resume)
    R/csv/version_<n>/config.yaml    the config of that process
    R/wandb/offline-run-*-<id>/      W&B segments of the one W&B run ``R/wandb_id`` names
    R/evaluations/<validate|test>/version_<n>/metrics.csv   later validate/test results
    R/evaluations/wandb/             their W&B runs

Light on purpose (no torch): ``lightning-ssl compare`` reads folders through it.

Examples:
    >>> holds_run("runs/never-made")
    False
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
FIT_LOGS = "csv"
EVALUATIONS = "evaluations"
WANDB_ID_FILE = "wandb_id"
#: ``--ckpt_path`` values resolved inside the run folder.
RESUME = "last"
RESUME_IF_POSSIBLE = "last_if_exists"


class RunFolderError(ValueError):
    """A run-folder mistake the user can fix (the message says how)."""


def read_run_info(root: str | os.PathLike) -> dict[str, Any]:
    """``root/run.json`` as a dict, ``{}`` when missing or unreadable."""
    path = Path(root) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file, so that a reader never sees half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not an intact ``torch.save`` file (a zip archive whose every member
    matches its CRC), or ``None`` when it is. Reads the whole file, never unpickles it.

    Examples:
        >>> checkpoint_problem("runs/a/checkpoints/last.ckpt")  # doctest: +SKIP
        'truncated or not a checkpoint (File is not a zip file)'
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        return f"truncated or not a checkpoint ({err})"
    return f"corrupt: member {bad} fails its CRC check" if bad is not None else None


def last_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest intact ``last*.ckpt`` in ``root/checkpoints`` (``None`` when there is none).

    Only this run's folder is searched: another run's checkpoint is never picked. A newer file
    that is truncated or corrupt (a disk that filled up, a copy cut short) is skipped with a
    warning naming both files.

    Raises:
        RunFolderError: every candidate is corrupt (each is named with its problem).
    """
    return newest_intact_last(Path(root) / CHECKPOINTS)


def newest_intact_last(folder: str | os.PathLike) -> Path | None:
    """The newest intact ``last*.ckpt`` directly in ``folder``, as :func:`last_checkpoint`
    (which searches a run's ``checkpoints`` folder); also used for any ``ModelCheckpoint``'s
    ``dirpath``.

    Raises:
        RunFolderError: every candidate is corrupt (each is named with its problem).
    """
    found = sorted(
        Path(folder).glob("last*.ckpt"),
        key=lambda p: (p.stat().st_mtime, p.name),
        reverse=True,
    )
    problems: list[tuple[Path, str]] = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            for bad, why in problems:
                log.warning(
                    "--ckpt_path last: the newer %s is unreadable (%s); resuming from the "
                    "previous good checkpoint %s instead",
                    bad,
                    why,
                    path,
                )
            return path
        problems.append((path, problem))
    if problems:
        listed = "; ".join(f"{path}: {why}" for path, why in problems)
        raise RunFolderError(
            f"--ckpt_path last: no intact checkpoint to resume from ({listed}); pass an "
            "earlier checkpoint file with --ckpt_path, or start afresh in another --run_dir"
        )
    return None


def holds_run(root: str | os.PathLike) -> bool:
    """Whether ``root`` already holds a training run (its metadata, logs or checkpoints)."""
    root = Path(root)
    return (
        "method" in read_run_info(root)
        or any((root / CHECKPOINTS).glob("*.ckpt"))
        or any((root / FIT_LOGS).glob("version_*/metrics.csv"))
    )


def describe_run(root: str | os.PathLike) -> str:
    """A short description of the run in ``root``: method, epochs and status."""
    info = read_run_info(root)
    if not info:
        return "a run"
    epochs = info.get("epochs_completed")
    return f"a {info.get('method', '?')} run ({epochs} epochs, {info.get('status', '?')})"


def resolve_ckpt_path(root: str | os.PathLike, ckpt_path: str | None, fit: bool) -> str | None:
    """``ckpt_path`` with ``last``/``last_if_exists`` resolved inside ``root`` only.

    ``last`` with nothing to resume is an error; ``last_if_exists`` (for jobs a scheduler may
    requeue) then starts a new run in ``fit``.

    Examples:
        >>> resolve_ckpt_path("runs/never-made", "last_if_exists", fit=True) is None
        True
    """
    if ckpt_path not in (RESUME, RESUME_IF_POSSIBLE):
        return ckpt_path
    found = last_checkpoint(root)
    if found is not None:
        return str(found)
    if ckpt_path == RESUME_IF_POSSIBLE and fit:
        return None
    start = (
        "start a new run without --ckpt_path, or pass --ckpt_path last_if_exists to resume "
        "only when a checkpoint exists (SLURM requeues)"
        if fit
        else "give a checkpoint file with --ckpt_path FILE"
    )
    raise RunFolderError(
        f"--ckpt_path {ckpt_path}: nothing to resume, {Path(root) / CHECKPOINTS} holds no "
        f"last*.ckpt; check --run_dir (or --trainer.default_root_dir) or {start}"
    )


def check_new_fit(root: str | os.PathLike) -> None:
    """Refuse a fresh ``fit`` into a folder that holds a run (it would mix two runs' logs)."""
    if holds_run(root):
        raise RunFolderError(
            f"{root} already holds {describe_run(root)}. Resume it with --ckpt_path last, "
            "start a new run in another folder with --run_dir DIR (or "
            "--trainer.default_root_dir DIR), or delete the folder to start over"
        )


def wandb_run_id(root: str | os.PathLike, resume: bool) -> str:
    """The W&B run id of the run in ``root``: the stored one when resuming, else a new one
    (stored in ``root/wandb_id``), so that a resumed run continues the same W&B run."""
    path = Path(root) / WANDB_ID_FILE
    if resume and path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def stored_wandb_id(root: str | os.PathLike) -> str | None:
    """The W&B run id stored in ``root`` (``None`` when there is none)."""
    path = Path(root) / WANDB_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def record_evaluation(root: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Append a validate/test result to ``root/run.json``'s ``evaluations`` list."""
    info = read_run_info(root)
    info.setdefault("evaluations", []).append(entry)
    Path(root).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(root) / RUN_FILE, info)
