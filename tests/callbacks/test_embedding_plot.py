"""EmbeddingPlot: a 2-D map of validation features every N epochs, as a PNG and in W&B."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from lightning_ssl.callbacks import EmbeddingPlot
from lightning_ssl.callbacks import embedding_plot as module
from lightning_ssl.methods import SimCLR
from tests.methods.helpers import SMALL_HEADS, SyntheticViews, quick_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class _Recording(EmbeddingPlot):
    """Keeps the projected inputs so the test can check what was plotted."""

    def on_validation_epoch_end(self, trainer, pl_module):
        self.last_inputs = [f.clone() for f in self._features]
        super().on_validation_epoch_end(trainer, pl_module)


def _fit(tmp_path: Path, plot: EmbeddingPlot, epochs: int = 3, **trainer) -> SimCLR:
    torch.manual_seed(0)
    data = SyntheticViews(n=32)
    model = SimCLR(backbone="timm:test_resnet", **SMALL_HEADS["SimCLR"], **data.link())
    quick_trainer(
        max_steps=-1,
        max_epochs=epochs,
        limit_val_batches=1.0,  # the whole validation set, as a real run
        callbacks=[plot],
        default_root_dir=tmp_path,
        **trainer,
    ).fit(model, data)
    return model


def test_plots_every_n_epochs_and_the_last_one_beside_the_run(tmp_path):
    plot = _Recording(every_n_epochs=2, method="tsne")
    model = _fit(tmp_path, plot, epochs=4)
    written = sorted(p.name for p in (tmp_path / "embeddings").glob("*.png"))
    assert written == ["epoch_0000.png", "epoch_0002.png", "epoch_0003.png"]  # 3 = last epoch
    with Image.open(tmp_path / "embeddings" / "epoch_0003.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
    # What was plotted: the 32 validation images' features of the final model, in order.
    data = SyntheticViews(n=32)
    model.eval()
    with torch.no_grad():
        expected = model.extract_features(data.val.tensors[0])
    torch.testing.assert_close(torch.cat(plot.last_inputs), expected, rtol=1e-4, atol=1e-5)


def test_max_points_bounds_the_plot(tmp_path):
    plot = _Recording(every_n_epochs=1, max_points=10, method="pca")
    _fit(tmp_path, plot, epochs=1)
    assert sum(len(f) for f in plot.last_inputs) == 16  # two batches of 8 reach 10, then stop
    assert (tmp_path / "embeddings" / "epoch_0000.png").exists()


def test_wandb_logger_receives_the_image(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), project="embedding-plot-test")
    _fit(tmp_path, EmbeddingPlot(every_n_epochs=1, method="pca"), epochs=1, logger=logger)
    logger.experiment.finish()
    images = list(tmp_path.glob("wandb/offline-run-*/files/media/images/val/embedding_*.png"))
    assert len(images) == 1


def test_pca_projection_is_the_top_two_principal_components():
    x = np.random.default_rng(0).normal(size=(40, 6)) * np.array([5.0, 3.0, 1, 1, 1, 1])
    points = module.project_2d(x, "pca")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[:2].T
    np.testing.assert_allclose(np.abs(points), np.abs(reference), rtol=1e-10, atol=1e-12)


def test_umap_is_called_with_normalised_features(monkeypatch):
    calls = {}

    class FakeUMAP:
        def __init__(self, n_components, random_state):
            calls["args"] = (n_components, random_state)

        def fit_transform(self, x):
            calls["norms"] = np.linalg.norm(x, axis=1)
            return x[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    monkeypatch.setattr(module, "_resolve", lambda method: "umap")
    assert module.project_2d(np.arange(12.0).reshape(4, 3) + 1, "umap", seed=3).shape == (4, 2)
    assert calls["args"] == (2, 3)
    np.testing.assert_allclose(calls["norms"], 1.0)


def test_missing_extra_is_named_at_construction(monkeypatch):
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"umap-learn: pip install 'lightning-ssl\[plots\]'"):
        EmbeddingPlot(method="umap")
    assert module._resolve("auto") == "pca"
    with pytest.raises(ValueError, match="every_n_epochs >= 1"):
        EmbeddingPlot(every_n_epochs=0)
