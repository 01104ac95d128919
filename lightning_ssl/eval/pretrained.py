"""Load a pretraining checkpoint of any method and take the encoder its evaluation uses.

Offline evaluation and export never rename state-dict keys: the file is read without running
code from it and the method class is looked up by the name the checkpoint records
(:mod:`lightning_ssl.checkpoint`), rebuilt from the saved hyperparameters and loaded strictly,
and the module that ``extract_features`` runs is found by calling it once (the student backbone,
or DINO's teacher).

Examples:
    >>> method = load_pretrained("runs/byol-cifar10/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> encoder = frozen(feature_encoder(method))  # doctest: +SKIP
    >>> encoder(torch.zeros(2, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([2, 512])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_ssl.checkpoint import CheckpointClassError, load_checkpoint
from lightning_ssl.eval.registry import checkpoint_class, rebuild
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.nn.backbones import Backbone


def method_class(checkpoint: dict[str, Any]) -> type[SSLMethod]:
    """The :class:`SSLMethod` subclass that wrote ``checkpoint`` (a loaded Lightning checkpoint),
    from the registry of :func:`~lightning_ssl.eval.registry.known_classes`.

    Raises:
        ValueError: the checkpoint names no method, or one that is not a known ``SSLMethod``.
    """
    cls = checkpoint_class(checkpoint)
    if not issubclass(cls, SSLMethod):
        raise CheckpointClassError(
            f"the checkpoint was written by {cls.__name__}, not by a pretraining method: "
            "evaluate the pretraining checkpoint it was made from"
        )
    return cls


def load_pretrained(path: str | Path) -> SSLMethod:
    """Rebuild the method saved in the Lightning checkpoint ``path``, on CPU, in eval mode.

    The file is read with :func:`~lightning_ssl.checkpoint.load_checkpoint` (no code runs from
    it) and the method class comes from the registry, never from a path in the file.

    Examples:
        >>> method = load_pretrained("last.ckpt")  # doctest: +SKIP
        >>> type(method).__name__  # doctest: +SKIP
        'SimCLR'
    """
    checkpoint = load_checkpoint(path)
    return rebuild(checkpoint, method_class(checkpoint)).eval()


def feature_encoder(method: SSLMethod) -> nn.Module:
    """The module whose output is ``method.extract_features``: one of the method's backbones.

    ``extract_features`` runs once on a small random batch with forward hooks on every
    :class:`Backbone`; the backbone whose output tensor *is* the returned features is the
    encoder. A method whose features are not a single backbone's output is wrapped whole.
    """
    outputs: dict[int, Tensor] = {}
    backbones = [m for m in method.modules() if isinstance(m, Backbone)]
    hooks = [
        b.register_forward_hook(lambda mod, _, out: outputs.__setitem__(id(mod), out))
        for b in backbones
    ]
    size = int(method.hparams.get("image_size", 224))
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            features = method.extract_features(torch.randn(2, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
        method.train(was_training)
    for backbone in backbones:
        if outputs.get(id(backbone)) is features:
            return backbone
    return _ExtractFeatures(method)


class _ExtractFeatures(nn.Module):
    """A whole method as an encoder, for features that are not one backbone's output."""

    def __init__(self, method: SSLMethod) -> None:
        super().__init__()
        self.method = method

    def forward(self, images: Tensor) -> Tensor:
        return self.method.extract_features(images)


def frozen(module: nn.Module) -> nn.Module:
    """``module`` without gradients and in eval mode (BatchNorm statistics frozen).

    Callers that own it as a submodule keep it in eval mode when Lightning calls ``train()``.
    """
    module.requires_grad_(False)
    return module.eval()
