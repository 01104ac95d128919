"""Run metadata: how a run was made (config hash, commit, device) and what it cost (time, memory).

:class:`RunInfo` writes ``run.json`` into the trainer's log dir and ``default_root_dir``; the CLI
adds it to every run, and ``lightning-ssl compare`` reads it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_ssl.lightning_types import trainer_attributes
from lightning_ssl.run_folder import read_run_info, write_json_atomic

#: Name of the metadata file in the run folders.
RUN_FILE = "run.json"


def git_commit(path: str | Path) -> tuple[str | None, bool | None]:
    """Commit of the git repository holding ``path`` and whether its tracked files differ from it;
    ``(None, None)`` outside a repository or without git.

    Examples:
        >>> commit, dirty = git_commit(Path(__file__).parent)
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model and the number of threads torch uses.

    Examples:
        >>> device_name(torch.device("cpu"))  # doctest: +SKIP
        'AMD EPYC (2 threads)'
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures: allocated CUDA memory on a GPU, else the peak
    resident set size of this process (Linux reports ``ru_maxrss`` in KiB, macOS in bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def ended(exception: BaseException, trainer: L.Trainer | None = None) -> dict[str, Any]:
    """``run.json`` fields for a run stopped by ``exception``: ``interrupted`` with the signal's
    name (SIGTERM, SIGINT, SIGUSR1: Lightning's ``SIGTERMException``), else ``failed`` with the
    error.

    Examples:
        >>> ended(ValueError("bad"))["status"], ended(KeyboardInterrupt())["signal"]
        ('failed', 'SIGINT')
    """
    if isinstance(exception, KeyboardInterrupt):
        return {"status": "interrupted", "signal": "SIGINT", "ended_at": _now()}
    if isinstance(exception, SIGTERMException):
        from lightning_ssl.signals import GracefulStop

        callbacks = trainer_attributes(trainer).callbacks if trainer else []
        stops = [c for c in callbacks if isinstance(c, GracefulStop)]
        name = stops[0].received.name if stops and stops[0].received else "SIGTERM"
        return {"status": "interrupted", "signal": name, "ended_at": _now()}
    error = f"{type(exception).__name__}: {exception}"
    return {"status": "failed", "error": error[:2000], "ended_at": _now()}


def mark_killed(folder: str | Path) -> list[Path]:
    """Mark a ``run.json`` of ``folder`` (and of the log dir it names) still saying ``running``
    as ``killed``: its process died without a word (SIGKILL, out of memory, node failure).

    Call it only while holding the folder's lock (:mod:`lightning_ssl.run_lock`), which proves
    that no live process writes there. Returns the files marked.

    Examples:
        >>> mark_killed("runs/simclr-cifar10")  # doctest: +SKIP
        [PosixPath('runs/simclr-cifar10/run.json'), ...]
    """
    marked = []
    files = [Path(folder) / RUN_FILE]
    for file in files:  # grows by the log dir named in the first file
        try:
            info = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if info.get("status") != "running":
            continue
        if info.get("log_dir") and (Path(info["log_dir"]) / RUN_FILE).resolve() != file.resolve():
            files.append(Path(info["log_dir"]) / RUN_FILE)
        info.update(status="killed", ended_at=None, killed_found_at=_now())
        write_json_atomic(file, info)
        marked.append(file)
    return marked


def _batch_size(batch: Any) -> int:
    """Images in a ``(views, labels)`` batch (or a bare tensor of images)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[-1])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return 0


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class RunInfo(L.Callback):
    """Write ``run.json``: what ran, where, from which code and config, and how fast.

    Written at fit start, after every training epoch and at fit end (rank 0 only, atomically)
    into the trainer's log dir (next to the CSV logger's ``metrics.csv`` and LightningCLI's
    ``config.yaml``) and into ``default_root_dir``; also put in the W&B run config under
    ``run_info`` when a :class:`WandbLogger` is present, so that W&B runs compare on it after
    ``wandb sync``. Training throughput counts images of training batches over the time spent in
    training epochs, validation excluded. Time and images carry over a resume from a checkpoint.

    Fields: ``method``, ``dataset``, ``backbone``, ``max_epochs``, ``epochs_completed``,
    ``global_batch_size``, ``batch_size_per_device``, ``world_size``, ``precision``,
    ``config_hash`` (sha256 of the saved ``config.yaml``, else of the hyperparameters),
    ``git_commit``, ``git_dirty``, ``device``, ``torch``, ``lightning``, ``start_time``,
    ``wall_time_s``, ``train_time_s``, ``train_images``, ``images_per_s``, ``peak_memory_mib``,
    ``peak_memory_kind``, ``metrics`` (``trainer.callback_metrics`` as floats), ``pid``,
    ``status`` and ``ended_at``. ``status`` is ``running``, then ``finished``, ``failed`` (with
    ``error``), ``interrupted`` (with ``signal``: SIGTERM, SIGUSR1, SIGINT) or ``killed`` (found
    still ``running`` by the next run in the folder: the process died without a word).

    Examples:
        >>> trainer = L.Trainer(callbacks=[RunInfo()])  # doctest: +SKIP
        >>> # after trainer.fit(...): json.load(open(Path(trainer.log_dir) / "run.json"))
    """

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._val_start = 0.0
        self._epoch_val_time = 0.0
        # Totals of earlier processes of a resumed run, then of this one.
        self._previous = {"wall_time_s": 0.0, "train_time_s": 0.0, "train_images": 0}
        self._train_time = 0.0
        self._train_images = 0
        self._log_dir: str | None = None
        self._global_batch: int | None = None

    # ------------------------------------------------------------------ state (resume)
    def _totals(self) -> dict[str, float]:
        wall = time.perf_counter() - self._fit_start if self._fit_start else 0.0
        return {
            "wall_time_s": self._previous["wall_time_s"] + wall,
            "train_time_s": self._previous["train_time_s"] + self._train_time,
            "train_images": self._previous["train_images"] + self._train_images,
        }

    def state_dict(self) -> dict[str, Any]:
        return self._totals()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._previous = {key: state_dict.get(key, 0) for key in self._previous}

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._train_time, self._train_images = 0.0, 0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        # Both are collective under DDP (a broadcast; a barrier when the loaders are built):
        # every rank must call them, not only the one that writes.
        self._log_dir = trainer.log_dir
        global_batch = getattr(pl_module, "global_batch_size", None)
        self._global_batch = global_batch() if callable(global_batch) else None
        if trainer.is_global_zero:
            self.info = self._static_info(trainer, pl_module)
            self._write(trainer, pl_module, status="running")
            self._log_to_wandb(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_val_time = 0.0
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Equal per-rank batches (DistributedSampler pads): every rank saw as many images.
        self._train_images += _batch_size(batch) * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start and not trainer.sanity_checking:
            self._epoch_val_time += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation runs inside the training epoch (before this hook): its time is taken out.
        self._train_time += time.perf_counter() - self._epoch_start - self._epoch_val_time
        self._epoch_start = 0.0
        if trainer.is_global_zero:
            self._write(trainer, pl_module, status="running", epochs=trainer.current_epoch + 1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.info["ended_at"] = _now()
            self._write(trainer, pl_module, status="finished")
            self._log_to_wandb(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.is_global_zero and self.info:
            self.info.update(ended(exception, trainer))
            self._write(trainer, pl_module, status=self.info["status"])

    # ------------------------------------------------------------------ content
    def _static_info(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Fields that do not change during the run."""
        datamodule = getattr(trainer, "datamodule", None)
        hparams = dict(pl_module.hparams)
        commit, dirty = git_commit(Path(__file__).resolve().parent)
        config_file = self._config_file(trainer)
        if config_file is not None:
            config_hash = file_sha256(config_file)
        else:
            config_hash = hashlib.sha256(
                json.dumps(hparams, sort_keys=True, default=str).encode()
            ).hexdigest()
        return {
            "name": Path(trainer.default_root_dir).name,
            "method": type(pl_module).__name__,
            "dataset": type(datamodule).__name__ if datamodule is not None else None,
            "backbone": hparams.get("backbone"),
            "max_epochs": trainer.max_epochs,
            "global_batch_size": self._global_batch,
            "batch_size_per_device": getattr(datamodule, "batch_size", None),
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "config_hash": config_hash,
            "config_file": str(config_file) if config_file is not None else None,
            "git_commit": commit,
            "git_dirty": dirty,
            "device": device_name(pl_module.device),
            "hostname": socket.gethostname(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "python": platform.python_version(),
            "command": sys.argv,
            "start_time": _now(),
            "pid": os.getpid(),
            "log_dir": self._log_dir,
            "default_root_dir": trainer.default_root_dir,
            # validate/test results recorded beside the run survive its resume.
            "evaluations": read_run_info(trainer.default_root_dir).get("evaluations", []),
        }

    def _config_file(self, trainer: L.Trainer) -> Path | None:
        for folder in (self._log_dir, trainer.default_root_dir):
            if folder and (Path(folder) / "config.yaml").is_file():
                return Path(folder) / "config.yaml"
        return None

    def _write(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        status: str,
        epochs: int | None = None,
    ) -> None:
        totals = self._totals()
        memory, memory_kind = peak_memory_mib(pl_module.device)
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        self.info.update(
            totals,
            status=status,
            epochs_completed=trainer.current_epoch if epochs is None else epochs,
            global_step=trainer.global_step,
            images_per_s=(
                totals["train_images"] / totals["train_time_s"] if totals["train_time_s"] else None
            ),
            peak_memory_mib=memory,
            peak_memory_kind=memory_kind,
            metrics={k: v for k, v in metrics.items() if v is not None},
        )
        folders = {os.path.abspath(f) for f in (self._log_dir, trainer.default_root_dir) if f}
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            write_json_atomic(Path(folder) / RUN_FILE, self.info)

    def _log_to_wandb(self, trainer: L.Trainer) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                # Metrics are in the W&B summary already; the config holds the provenance.
                info = {k: v for k, v in self.info.items() if k != "metrics"}
                logger.experiment.config.update({"run_info": info}, allow_val_change=True)
