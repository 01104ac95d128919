"""Loggers placed in the run folder: the CLI sets every logger's folder from the run's, so that
no config can split one run's logs, checkpoints and metadata over several folders.

``fit`` logs to ``R/csv/version_<n>`` and ``R/wandb`` (one W&B run id per run folder, continued
on resume); ``validate``/``test`` log beside the run, to ``R/evaluations/<subcommand>`` and
``R/evaluations/wandb``, and never into its training history.

Examples:
    ``lightning-ssl fit --config configs/simclr/quickstart.yaml --run_dir runs/try1``
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger

from lightning_ssl.run_folder import EVALUATIONS, FIT_LOGS, wandb_run_id


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` whose ``save_dir`` may be left out of a config: the CLI sets it
    to the run folder (``R/csv/version_<n>/metrics.csv``).

    Examples:
        >>> logger = CSVLogger("runs/try1")
        >>> logger.log_dir
        'runs/try1/csv/version_0'
    """

    def __init__(
        self,
        save_dir: str = ".",
        name: str | None = FIT_LOGS,
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)


def _entries(loggers: Any) -> list[Any]:
    """The logger entries (namespaces with ``class_path``/``init_args``) of a trainer config."""
    if isinstance(loggers, (list, tuple)):
        return [entry for entry in loggers if hasattr(entry, "init_args")]
    return [loggers] if hasattr(loggers, "init_args") else []


def place_loggers(loggers: Any, root: str, subcommand: str, log_model: Any = None) -> None:
    """Point the logger entries of a parsed config into the run folder ``root`` (in place).

    ``fit`` logs into ``root`` (CSV under ``csv/``); other subcommands under
    ``root/evaluations`` (CSV under ``evaluations/<subcommand>``). ``log_model`` (when not
    ``None``) sets W&B's checkpoint artifacts (``True``: the final checkpoints, ``"all"``: each).
    """
    fit = subcommand == "fit"
    save_dir = os.path.abspath(root if fit else os.path.join(root, EVALUATIONS))
    for entry in _entries(loggers):
        init = entry.init_args
        if "save_dir" in init:
            init.save_dir = save_dir
        class_name = entry.class_path.rsplit(".", 1)[-1]
        if class_name == "CSVLogger":
            init.name = FIT_LOGS if fit else subcommand
            init.version = None
        if class_name == "WandbLogger":
            # WANDB_MODE decides (offline here by default): a config's offline: true would
            # force offline mode even when the user asks for WANDB_MODE=online.
            init.offline = False
            init.dir = None
            if log_model is not None:
                init.log_model = log_model


def configure_wandb(
    logger: WandbLogger, root: str, subcommand: str, resume: bool, group: str, tags: list[str]
) -> None:
    """Name, group and tag a W&B logger before its run starts; ``fit`` uses the run folder's
    W&B id (the stored one when resuming), so that a resumed run continues the same W&B run."""
    init = logger._wandb_init
    if init.get("anonymous") is None:
        init.pop("anonymous", None)  # W&B warns about the key even when it is None
    run_name = Path(os.path.abspath(root)).name
    if subcommand == "fit":
        run_id = wandb_run_id(root, resume)
        logger._id = init["id"] = run_id
        init["resume"] = "allow"
        init["name"] = init.get("name") or run_name
    else:
        init["name"] = init.get("name") or f"{run_name}-{subcommand}"
        init["job_type"] = init.get("job_type") or subcommand
    # W&B's service process resolves a relative folder against its own working directory
    # (that of the first run in this process tree), not this run's.
    init["dir"] = logger._save_dir = os.path.abspath(init.get("dir") or logger.save_dir or root)
    if not init.get("group"):
        init["group"] = group
    if not init.get("tags"):
        init["tags"] = tags
