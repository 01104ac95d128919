"""Embedding plots during training: a 2-D map of validation features coloured by class."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.callbacks.knn import is_last_epoch

Projection = Literal["auto", "umap", "tsne", "pca"]


def project_2d(features: np.ndarray, method: Projection = "auto", seed: int = 0) -> np.ndarray:
    """Project ``(N, D)`` features to ``(N, 2)`` with UMAP, t-SNE or PCA.

    ``"auto"`` takes UMAP when ``umap-learn`` is installed (``pip install lightning-ssl[plots]``),
    else t-SNE when scikit-learn is, else PCA (no extra dependency). Features are L2-normalised
    first, as the kNN monitor compares them.

    Examples:
        >>> project_2d(np.random.rand(50, 8), "pca").shape
        (50, 2)
    """
    chosen = _resolve(method)
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if chosen == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    if chosen == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    centred = torch.from_numpy(x - x.mean(axis=0)).double()
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).numpy()


def _resolve(method: Projection) -> str:
    available = {
        "umap": importlib.util.find_spec("umap") is not None,
        "tsne": importlib.util.find_spec("sklearn") is not None,
        "pca": True,
    }
    if method == "auto":
        return next(name for name, ok in available.items() if ok)
    if method not in available:
        raise ValueError(f"projection must be one of auto, umap, tsne, pca; got {method!r}")
    if not available[method]:
        package = "umap-learn" if method == "umap" else "scikit-learn"
        raise ImportError(
            f"EmbeddingPlot(method={method!r}) needs {package}: pip install 'lightning-ssl[plots]'"
        )
    return method


def scatter_png(points: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    """Write a scatter plot of ``points`` coloured by ``labels`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 6), dpi=100)
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, label in enumerate(classes):
        chosen = labels == label
        x, y = points[chosen].T
        axes.scatter(x, y, s=6, color=colours(i % colours.N), label=str(label))
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    if len(classes) <= 20:
        axes.legend(markerscale=3, fontsize=7, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", bbox_inches="tight")
    plt.close(figure)
    temporary.replace(path)  # a crash never leaves half a PNG under the final name
    return path


class EmbeddingPlot(L.Callback):
    """Every ``every_n_epochs`` validation epochs, plot a 2-D map of the validation features.

    The features the module returns from ``validation_step`` (``extract_features``: what the
    probe and kNN see) of up to ``max_points`` validation images (the first ones, gathered from
    every process) are projected by :func:`project_2d` and drawn coloured by class. The PNG goes to
    ``<default_root_dir>/embeddings/epoch_<E>.png`` (beside the run's checkpoints and logs) and,
    when a W&B logger is configured, to W&B as ``val/embedding`` at the current step. The last
    training epoch always gets a plot. Only rank 0 projects and writes.

    Args:
        every_n_epochs: plot on validation epochs whose index is a multiple of this.
        max_points: validation images plotted at most (t-SNE/UMAP cost grows with them).
        method: ``"auto"``, ``"umap"`` (``pip install 'lightning-ssl[plots]'``), ``"tsne"``,
            or ``"pca"``.
        seed: random state of the projection.

    Examples:
        >>> plot = EmbeddingPlot(every_n_epochs=10, method="pca")
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        max_points: int = 2000,
        method: Projection = "auto",
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1 or max_points < 3:
            raise ValueError(
                f"EmbeddingPlot needs every_n_epochs >= 1 and max_points >= 3, "
                f"got {every_n_epochs} and {max_points}"
            )
        _resolve(method)  # a missing extra fails now, not after an epoch of training
        self.every_n_epochs, self.max_points, self.method, self.seed = (
            every_n_epochs,
            max_points,
            method,
            seed,
        )
        self._features: list[Tensor] = []
        self._labels: list[Tensor] = []
        self.written: list[Path] = []

    def _active(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        return trainer.current_epoch % self.every_n_epochs == 0 or is_last_epoch(trainer)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._features, self._labels = [], []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        seen = sum(len(f) for f in self._features) * distributed.world_size()
        if not self._active(trainer) or seen >= self.max_points:
            return
        self._features.append(outputs["features"].detach().float())
        self._labels.append(batch[1].detach())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer) or not self._features:
            return
        features = distributed.gather_no_grad(torch.cat(self._features))
        labels = distributed.gather_no_grad(torch.cat(self._labels))
        self._features, self._labels = [], []
        if trainer.global_rank != 0 or len(features) < 3:
            return
        features, labels = features[: self.max_points], labels[: self.max_points]
        points = project_2d(features.cpu().numpy(), self.method, self.seed)
        epoch = trainer.current_epoch
        path = Path(trainer.default_root_dir) / "embeddings" / f"epoch_{epoch:04d}.png"
        title = f"{type(pl_module).__name__}, epoch {epoch}, {_resolve(self.method)}"
        self.written.append(scatter_png(points, labels.cpu().numpy(), path, title))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/embedding", [str(path)], step=trainer.global_step)
