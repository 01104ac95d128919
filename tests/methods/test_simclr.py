import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.callbacks import KNNMonitor, NonFiniteLossGuard, OnlineLinearProbe
from lightning_ssl.methods import SimCLR
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(backbone="resnet18", cifar_stem=True, proj_hidden_dim=64, proj_dim=32)
TINY = dict(backbone="timm:test_resnet", proj_hidden_dim=64, proj_dim=32)


def test_simclr_paper_defaults():
    model = SimCLR()
    assert (model.hparams.temperature, model.hparams.loss_scale) == (0.1, 1.0)
    assert model.projector[0].out_features == 2048 and model.projector[-2].out_features == 128
    assert model.backbone.dim == 512


def test_simclr_projector_is_the_official_layout_or_solo_learns():
    """Official ``model_util.py`` ``projection_head``/``linear_layer``: dense without bias, BN
    (center=True) + ReLU, then dense without bias and BN with ``center=False`` (scale only);
    solo-learn: Linear-ReLU-Linear with biases, no BN."""
    official = SimCLR(**SMALL).projector
    assert [type(m).__name__ for m in official] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"
    ]  # fmt: skip
    assert official[0].bias is None and official[3].bias is None
    out_bn = official[4]
    assert out_bn.weight.requires_grad and not out_bn.bias.requires_grad
    assert official[1].weight.requires_grad and official[1].bias.requires_grad
    solo = SimCLR(**SMALL, proj_batch_norm="none").projector
    assert [type(m).__name__ for m in solo] == ["Linear", "ReLU", "Linear"]
    assert solo[0].bias is not None and solo[2].bias is not None


def _official_simclr_loss(hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """google-research/simclr ``objective.py`` ``add_contrastive_loss`` (one replica)."""
    hidden = F.normalize(hidden, dim=-1)
    h1, h2 = hidden.chunk(2)
    n = h1.shape[0]
    masks = torch.eye(n)
    logits_aa = h1 @ h1.T / temperature - masks * 1e9
    logits_bb = h2 @ h2.T / temperature - masks * 1e9
    logits_ab, logits_ba = h1 @ h2.T / temperature, h2 @ h1.T / temperature
    labels = torch.arange(n)
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels)
    return loss_a + loss_b


@pytest.mark.parametrize("loss_scale", [1.0, 2.0])
def test_simclr_loss_scale_2_is_the_official_loss_with_its_gradients(loss_scale):
    data = SyntheticViews(batch_size=6)
    torch.manual_seed(0)
    model = SimCLR(**TINY, **data.link(), temperature=0.2, loss_scale=loss_scale)
    model.log = lambda *a, **k: None
    (x1, x2), labels = next(iter(data.train_dataloader()))
    loss = model.training_step(([x1, x2], labels), 0)["loss"]
    ours = torch.autograd.grad(loss, model.projector[0].weight)[0]
    torch.manual_seed(0)
    reference = SimCLR(**TINY, **data.link())
    hidden = reference.projector(reference.backbone(torch.cat([x1, x2])))  # one 2B batch
    official = _official_simclr_loss(hidden, 0.2) * loss_scale / 2
    grad = torch.autograd.grad(official, reference.projector[0].weight)[0]
    torch.testing.assert_close(loss, official, rtol=1e-6, atol=1e-6)
    # float32 sums in another order (and -inf vs. -1e9 masks): 1e-5 of the gradient's norm
    assert float((ours - grad).norm()) <= 1e-5 * float(grad.norm())


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
