"""lightning-ssl: self-supervised visual representation learning with PyTorch Lightning."""

__version__ = "0.1.0"
