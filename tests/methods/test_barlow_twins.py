import inspect

import pytest
import torch
from torch import nn

from lightning_ssl.callbacks import NonFiniteLossGuard
from lightning_ssl.losses import barlow_twins_loss
from lightning_ssl.methods.barlow_twins import BarlowTwins
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(
    backbone="vit_tiny_patch16_224",
    backbone_kwargs={"depth": 1},
    proj_hidden_dim=64,
    proj_dim=32,
)


def test_barlow_twins_paper_defaults():
    defaults = {k: p.default for k, p in inspect.signature(BarlowTwins).parameters.items()}
    assert (defaults["proj_hidden_dim"], defaults["proj_dim"]) == (8192, 8192)
    assert (defaults["lambda_offdiag"], defaults["scale_loss"]) == (0.0051, 1.0)
    assert (defaults["lr"], defaults["lr_biases"], defaults["weight_decay"]) == (
        0.2,
        0.0048,
        1.5e-6,
    )
    assert defaults["min_lr_ratio"] == 0.001
    model = BarlowTwins(**SMALL, image_size=32)
    assert model.hparams.optimizer == "lars" and not BarlowTwins.supports_local_crops
    layers = [type(m) for m in model.projector]
    assert layers == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]  # no BN at the end
    assert any(isinstance(c, NonFiniteLossGuard) for c in model.configure_callbacks())


def test_barlow_twins_refuses_local_and_extra_global_crops():
    with pytest.raises(ValueError, match="does not use local crops"):
        BarlowTwins(**SMALL, image_size=32, num_local_crops=2)
    with pytest.raises(ValueError, match="uses 2 views"):
        BarlowTwins(**SMALL, image_size=32, num_global_crops=3)


def test_barlow_twins_trains_with_the_bias_learning_rate():
    data = SyntheticViews(image_size=32, batch_size=4)
    model = BarlowTwins(**SMALL, **data.link())
    trainer = quick_trainer(max_steps=2)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    groups = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert groups["default/no_decay"] == pytest.approx(groups["default"] * 0.0048 / 0.2)
    assert groups["default"] > 0


def test_barlow_twins_step_scales_the_loss():
    data = SyntheticViews(image_size=32, batch_size=4)
    model = BarlowTwins(**SMALL, **data.link(), scale_loss=0.1, lambda_offdiag=0.01)
    model.log = lambda *args, **kwargs: None
    views, labels = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    out = model.training_step((views, labels), 0)
    z_a, z_b = (model.projector(model.backbone(v)) for v in views)
    torch.testing.assert_close(out["loss"], 0.1 * barlow_twins_loss(z_a, z_b, 0.01))
    assert out["features"].shape == (8, 192)
