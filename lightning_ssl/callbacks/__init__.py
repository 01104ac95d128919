"""Lightning callbacks: momentum teachers, queues, online probe, kNN monitor, guards."""

from lightning_ssl.callbacks.ema import EMA
from lightning_ssl.callbacks.guards import NonFiniteLossError, NonFiniteLossGuard
from lightning_ssl.callbacks.knn import KNNMonitor
from lightning_ssl.callbacks.online_probe import OnlineLinearProbe
from lightning_ssl.callbacks.queue import QueueUpdater

__all__ = [
    "EMA",
    "KNNMonitor",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "OnlineLinearProbe",
    "QueueUpdater",
]
