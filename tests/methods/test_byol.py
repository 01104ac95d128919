import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl.callbacks import EMA, NonFiniteLossGuard
from lightning_ssl.methods.byol import BYOL
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(
    backbone="test_resnet", proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32, lr=0.3,
    warmup_epochs=0, tau_base=0.9,
)  # fmt: skip


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_byol_paper_defaults():
    model = BYOL()
    hp = model.hparams
    assert (hp.tau_base, hp.tau_final) == (0.996, 1.0)
    assert (hp.optimizer, hp.lr, hp.weight_decay) == ("lars", 0.2, 1.5e-6)
    heads = {
        model.projector: [(512, 4096), (4096, 256)],
        model.predictor: [(256, 4096), (4096, 256)],
    }
    for mlp, dims in heads.items():
        assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == dims
        assert sum(isinstance(m, nn.BatchNorm1d) for m in mlp) == 1  # hidden layer only
        assert mlp[-1].bias is None  # official networks.py: hk.Linear(with_bias=False)
    assert hp.loss_form == "squared_distance"
    solo = BYOL(**SMALL, heads_last_bias=True)
    assert solo.projector[-1].bias is not None and solo.predictor[-1].bias is not None
    assert BYOL.supports_local_crops


def test_byol_required_callbacks():
    model = BYOL(**SMALL)
    callbacks = model.configure_callbacks()
    ema = next(c for c in callbacks if isinstance(c, EMA))
    assert (ema.schedule, ema.base_tau, ema.final_tau) == ("cosine", 0.9, 1.0)
    assert ema.buffers == "leave"  # official: target_params EMA, target_state its own
    assert ema.teacher is model.teacher and not any(
        p.requires_grad for p in ema.teacher.parameters()
    )
    assert any(isinstance(c, NonFiniteLossGuard) for c in callbacks)


def neg_cos(p, t):
    return -(F.normalize(p, dim=1) * F.normalize(t, dim=1)).sum(1).mean()


def regression_loss(x, y):
    """deepmind-research ``byol/utils/helpers.py``: ``l2_normalize`` and ``regression_loss``."""

    def l2_normalize(v):
        return v * torch.rsqrt(torch.clamp((v * v).sum(-1, keepdim=True), min=1e-12))

    return ((l2_normalize(x) - l2_normalize(y)) ** 2).sum(-1)


@pytest.mark.parametrize("loss_form", ["squared_distance", "neg_cosine"])
@pytest.mark.parametrize("num_local_crops", [0, 2])
def test_byol_loss_by_hand(num_local_crops, loss_form):
    data = SyntheticViews(batch_size=4, num_local_crops=num_local_crops)
    model = BYOL(**SMALL, **data.link(), loss_form=loss_form)
    model.log = lambda *a, **k: None
    views, labels = next(iter(data.train_dataloader()))
    out = model.training_step((views, labels), 0)
    with torch.no_grad():
        # Global views one by one, local crops batched together (as the method does).
        h = [model.backbone(x) for x in views[:2]]
        h += model.backbone(torch.cat(views[2:])).chunk(num_local_crops) if num_local_crops else []
        p = [model.predictor(model.projector(h_v)) for h_v in h]
        t1, t2 = model.teacher(views[0]), model.teacher(views[1])
        D = neg_cos if loss_form == "neg_cosine" else lambda p, t: regression_loss(p, t).mean()
        if num_local_crops == 0:  # the paper's symmetric loss (official byol_experiment.py)
            expected = D(p[0], t2) + D(p[1], t1)
        else:  # each teacher view predicted by the 3 other crops, averaged, summed over views
            expected = sum(D(p[i], t1) for i in (1, 2, 3)) / 3
            expected = expected + sum(D(p[i], t2) for i in (0, 2, 3)) / 3
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert out["features"].shape == (8, 96) and out["loss"].requires_grad


def test_byol_trains_with_local_crops_and_moves_the_teacher():
    data = SyntheticViews(batch_size=8, num_local_crops=2)
    model = BYOL(**SMALL, **data.link())
    initial = flat(nn.Sequential(model.backbone, model.projector)).clone()
    trainer = quick_trainer(max_steps=3)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/ema_tau" in trainer.callback_metrics
    teacher, student = flat(model.teacher), flat(nn.Sequential(model.backbone, model.projector))
    assert not torch.equal(teacher, student) and not torch.equal(teacher, initial)


def test_byol_paper_loss_has_twice_the_gradient_of_neg_cosine():
    """The official loss ``mean(regression_loss(p1, t2) + regression_loss(p2, t1))`` is
    ``4 + 2 * neg_cosine``: same minimiser, gradients exactly doubled."""
    data = SyntheticViews(batch_size=4)
    views, labels = next(iter(data.train_dataloader()))
    grads, losses = {}, {}
    for form in ("squared_distance", "neg_cosine"):
        torch.manual_seed(0)
        model = BYOL(**SMALL, **data.link(), loss_form=form)
        model.log = lambda *a, **k: None
        losses[form] = model.training_step((views, labels), 0)["loss"]
        grads[form] = torch.autograd.grad(losses[form], model.predictor[0].weight)[0]
    torch.testing.assert_close(losses["squared_distance"], 4 + 2 * losses["neg_cosine"])
    torch.testing.assert_close(grads["squared_distance"], 2 * grads["neg_cosine"])
