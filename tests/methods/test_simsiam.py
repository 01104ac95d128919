import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl.callbacks import NonFiniteLossGuard
from lightning_ssl.methods.simsiam import SimSiam
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(backbone="test_resnet", proj_hidden_dim=32, proj_dim=32, pred_hidden_dim=8)


def layout(mlp: nn.Module) -> list:
    """(in, out, bias) of each linear layer and the affine flag of each BatchNorm."""
    return [
        (m.in_features, m.out_features, m.bias is not None)
        if isinstance(m, nn.Linear)
        else m.affine
        for m in mlp
        if isinstance(m, nn.Linear | nn.BatchNorm1d)
    ]


def test_simsiam_paper_defaults():
    model = SimSiam()
    hp = model.hparams
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.momentum) == ("sgd", 0.05, 1e-4, 0.9)
    assert hp.warmup_epochs == 0
    assert layout(model.projector) == [
        (512, 2048, False), True, (2048, 2048, False), True, (2048, 2048, False), False
    ]  # fmt: skip
    assert layout(model.predictor) == [(2048, 512, False), True, (512, 2048, True)]
    assert model.param_group_overrides() == {"predictor.": {"fixed_lr": True}}
    assert any(isinstance(c, NonFiniteLossGuard) for c in model.configure_callbacks())


def test_simsiam_loss_by_hand():
    data = SyntheticViews(batch_size=4)
    model = SimSiam(**SMALL, **data.link())
    model.log = lambda *a, **k: None
    (x1, x2), labels = next(iter(data.train_dataloader()))
    out = model.training_step(([x1, x2], labels), 0)
    with torch.no_grad():
        z1, z2 = model.projector(model.backbone(x1)), model.projector(model.backbone(x2))
        p1, p2 = model.predictor(z1), model.predictor(z2)
        d = lambda p, z: -F.cosine_similarity(p, z, dim=1).mean()  # noqa: E731
        expected = d(p1, z2) / 2 + d(p2, z1) / 2
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_simsiam_predictor_keeps_its_learning_rate():
    data = SyntheticViews(batch_size=8)
    model = SimSiam(**SMALL, warmup_epochs=0.5, **data.link())  # 2 warm-up steps of 4
    trainer = quick_trainer(max_steps=4)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    groups = trainer.optimizers[0].param_groups
    predictor = [g for g in groups if g["name"].startswith("predictor.")]
    others = [g for g in groups if not g["name"].startswith("predictor.")]
    assert predictor and others
    assert all(g["lr"] == pytest.approx(model.effective_lr) for g in predictor)
    assert all(g["lr"] < 0.5 * model.effective_lr for g in others)


def test_simsiam_refuses_local_crops():
    with pytest.raises(ValueError, match="does not use local crops"):
        SimSiam(**SMALL, num_local_crops=2)
