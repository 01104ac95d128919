"""Self-supervised methods, one ``LightningModule`` per file."""

from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.simclr import SimCLR

__all__ = ["SSLMethod", "SimCLR"]
