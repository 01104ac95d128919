import lightning as L
import pytest
import torch

from lightning_ssl.callbacks import KNNMonitor, NonFiniteLossGuard, OnlineLinearProbe
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


def test_lr_is_scaled_from_the_global_batch_and_follows_warmup_cosine_per_step():
    data = SyntheticViews(batch_size=8, n=64)
    model = SimCLR(**SMALL, **data.link(), lr=0.3, lr_scaling="linear", warmup_epochs=1)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = quick_trainer(
        max_epochs=2, max_steps=-1, accumulate_grad_batches=2, callbacks=[Record()]
    )
    trainer.fit(model, data)
    # global batch = 1 device x 8 images x 2 accumulated batches = 16
    assert model.global_batch_size() == 16
    assert model.effective_lr == pytest.approx(0.3 * 16 / 256)
    # 4 optimizer steps per epoch, 8 in all: warm-up over the first 4, then cosine to 0.
    per_step = lrs[::2]  # the LR changes once per optimizer step (every 2 batches)
    expected = [model.effective_lr * f for f in (1 / 4, 2 / 4, 3 / 4, 1.0)]
    assert per_step[:4] == pytest.approx(expected)
    assert per_step[4:] == sorted(per_step[4:], reverse=True) and per_step[-1] < per_step[3]


def test_bf16_mixed_precision_with_probe_and_knn():
    data = SyntheticViews(num_local_crops=2)
    small = {**SMALL, "backbone": "timm:test_resnet", "cifar_stem": False}
    model = SimCLR(**small, **data.link(), temperature=0.07)
    probe, knn = OnlineLinearProbe(), KNNMonitor(k=5)
    trainer = quick_trainer(
        max_epochs=1, max_steps=-1, precision="bf16-mixed", callbacks=[probe, knn]
    )
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and metrics["train/loss"].dtype == torch.float32
    assert probe.head.weight.dtype == torch.float32 and torch.isfinite(probe.head.weight).all()
    assert 0.0 <= float(metrics["val/probe_top1"]) <= 1.0
    assert 0.0 <= float(metrics["val/knn_top1"]) <= 1.0
