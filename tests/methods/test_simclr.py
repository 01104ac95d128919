import pytest
import torch

from lightning_ssl.callbacks import NonFiniteLossGuard, OnlineLinearProbe
from lightning_ssl.methods import SimCLR
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(backbone="resnet18", cifar_stem=True, proj_hidden_dim=64, proj_dim=32)


def test_simclr_paper_defaults():
    model = SimCLR()
    assert model.hparams.temperature == 0.1
    assert model.projector[0].out_features == 2048 and model.projector[-1].out_features == 128
    assert model.backbone.dim == 512


def test_simclr_trains_with_multi_crop_and_probe():
    data = SyntheticViews(num_local_crops=2)
    model = SimCLR(**SMALL, **data.link())
    trainer = quick_trainer(max_steps=3, callbacks=[OnlineLinearProbe()])
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/probe_top1" in trainer.callback_metrics
    assert any(isinstance(c, NonFiniteLossGuard) for c in trainer.callbacks)


def test_simclr_step_output_holds_global_crop_features_only():
    data = SyntheticViews(num_local_crops=2, batch_size=4)
    model = SimCLR(**SMALL, **data.link())
    views, labels = next(iter(data.train_dataloader()))
    model.log = lambda *a, **k: None
    out = model.training_step((views, labels), 0)
    assert out["features"].shape == (2 * 4, 512) and not out["features"].requires_grad
    assert out["loss"].requires_grad


def test_method_without_local_crops_support_refuses_them():
    class TwoViewOnly(SimCLR):
        supports_local_crops = False

    with pytest.raises(ValueError, match="does not use local crops"):
        TwoViewOnly(**SMALL, num_local_crops=4)
