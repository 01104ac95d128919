import math

import pytest
import torch
from torch import nn

from lightning_ssl.optim import build_optimizer, parameter_groups, scaled_lr


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_bias_and_norm_weights_get_no_weight_decay_by_default():
    net = _net()
    groups = parameter_groups(net.named_parameters(), weight_decay=0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(net[0].weight), id(net[3].weight)}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_frozen_parameters_are_skipped_and_overrides_make_groups():
    net = _net()
    net[0].requires_grad_(False)
    groups = parameter_groups(net.named_parameters(), 0.1, {"3.": {"fixed_lr": True}})
    names = {g["name"] for g in groups}
    assert names == {"default/no_decay", "3.", "3./no_decay"}
    assert all(g.get("fixed_lr") for g in groups if g["name"].startswith("3."))


def test_bias_and_norm_decay_and_adaptation_are_options():
    net = _net()
    groups = parameter_groups(
        net.named_parameters(), 0.1, decay_bias_and_norm=True, adapt_bias_and_norm=True
    )
    assert {g["name"]: (g["weight_decay"], g["lars_adapt"]) for g in groups} == {
        "default": (0.1, True),
        "default/bias_norm": (0.1, True),
    }


def test_lr_scaling_rules():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(0.075 * math.sqrt(16))
    assert scaled_lr(0.3, 4096, "none") == 0.3
    with pytest.raises(ValueError, match="scaling rule"):
        scaled_lr(0.3, 256, "cubic")  # type: ignore[arg-type]


def test_lars_does_not_adapt_groups_without_weight_decay():
    torch.manual_seed(0)
    net = _net()
    groups = parameter_groups(net.named_parameters(), weight_decay=1e-6)
    opt = build_optimizer("lars", groups, lr=0.1, weight_decay=1e-6, momentum=0.0)
    bias_before = net[0].bias.detach().clone()
    net(torch.randn(16, 4)).sum().backward()
    grad = net[0].bias.grad.clone()
    opt.step()
    # No decay and no trust ratio on the bias: plain SGD step.
    assert torch.allclose(net[0].bias, bias_before - 0.1 * grad)


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_every_optimizer_steps(name):
    net = _net()
    opt = build_optimizer(name, parameter_groups(net.named_parameters(), 1e-4), 0.01, 1e-4)
    before = net[0].weight.detach().clone()
    net(torch.randn(8, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, net[0].weight)


@pytest.mark.parametrize(
    ("preset", "decay", "adapt"), [("solo_learn", False, False), ("swav", True, True)]
)
def test_method_builds_the_configured_lars(preset, decay, adapt):
    """The method's own optimizer assembly honours lars_preset and the bias/norm options
    (a config setting them must not fall back silently to another LARS)."""
    from lightning_ssl.lars import LARS, LARS_PRESETS
    from lightning_ssl.methods import SimCLR
    from tests.methods.helpers import SyntheticViews, quick_trainer

    data = SyntheticViews(image_size=32, batch_size=8, n=16)
    method = SimCLR(
        backbone="timm:test_resnet",
        proj_hidden_dim=32,
        proj_dim=16,
        optimizer="lars",
        lars_preset=preset,
        decay_bias_and_norm=decay,
        adapt_bias_and_norm=adapt,
        weight_decay=1e-4,
        **data.link(),
    )
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(method, datamodule=data)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, LARS)
    for key, value in LARS_PRESETS[preset].optimizer_options().items():
        assert all(g[key] == value for g in optimizer.param_groups), key
    bias_norm = [g for g in optimizer.param_groups if all(p.ndim <= 1 for p in g["params"])]
    assert bias_norm and all(g["lars_adapt"] == adapt for g in bias_norm)
    assert all((g["weight_decay"] > 0) == decay for g in bias_norm)
