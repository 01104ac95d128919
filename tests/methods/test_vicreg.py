import inspect

import pytest
import torch
from torch import nn

from lightning_ssl.callbacks import NonFiniteLossGuard
from lightning_ssl.methods.vicreg import VICReg
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(
    backbone="vit_tiny_patch16_224",
    backbone_kwargs={"depth": 1},
    proj_hidden_dim=64,
    proj_dim=32,
)


def test_vicreg_paper_defaults():
    defaults = {k: p.default for k, p in inspect.signature(VICReg).parameters.items()}
    assert (defaults["proj_hidden_dim"], defaults["proj_dim"]) == (8192, 8192)
    assert (defaults["sim_coeff"], defaults["std_coeff"], defaults["cov_coeff"]) == (25, 25, 1)
    assert (defaults["lr"], defaults["weight_decay"], defaults["min_lr_ratio"]) == (0.2, 1e-6, 1e-3)
    model = VICReg(**SMALL, image_size=32)
    assert model.hparams.optimizer == "lars" and not VICReg.supports_local_crops
    layers = [type(m) for m in model.expander]
    assert layers == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert any(isinstance(c, NonFiniteLossGuard) for c in model.configure_callbacks())


def test_vicreg_refuses_local_and_extra_global_crops():
    with pytest.raises(ValueError, match="does not use local crops"):
        VICReg(**SMALL, image_size=32, num_local_crops=2)
    with pytest.raises(ValueError, match="uses 2 views"):
        VICReg(**SMALL, image_size=32, num_global_crops=3)


def test_vicreg_trains_and_logs_its_three_terms():
    data = SyntheticViews(image_size=32, batch_size=4)
    model = VICReg(**SMALL, **data.link())
    trainer = quick_trainer(max_steps=2)
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    terms = [metrics[f"train/{k}"] for k in ("invariance", "variance", "covariance")]
    expected = 25 * terms[0] + 25 * terms[1] + terms[2]
    assert metrics["train/loss"].item() == pytest.approx(expected.item(), rel=1e-5)
