"""Lightning callbacks: teachers, queues, online probe, kNN, embedding plots, guards, collapse."""

from lightning_ssl.callbacks.collapse import CollapseMonitor, embedding_std
from lightning_ssl.callbacks.ema import EMA
from lightning_ssl.callbacks.embedding_plot import EmbeddingPlot
from lightning_ssl.callbacks.epoch_end_resume import EpochEndResume
from lightning_ssl.callbacks.guards import NonFiniteLossError, NonFiniteLossGuard
from lightning_ssl.callbacks.knn import KNNMonitor
from lightning_ssl.callbacks.online_probe import OnlineLinearProbe
from lightning_ssl.callbacks.queue import QueueUpdater
from lightning_ssl.callbacks.run_info import RunInfo
from lightning_ssl.callbacks.zero_shot import ZeroShotMonitor

__all__ = [
    "EMA",
    "CollapseMonitor",
    "EmbeddingPlot",
    "EpochEndResume",
    "KNNMonitor",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "OnlineLinearProbe",
    "QueueUpdater",
    "RunInfo",
    "ZeroShotMonitor",
    "embedding_std",
]
