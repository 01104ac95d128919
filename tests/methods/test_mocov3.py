import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl.callbacks import EMA, NonFiniteLossGuard
from lightning_ssl.methods.mocov3 import MoCoV3
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(
    backbone="test_resnet", proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32, lr=0.3,
    warmup_epochs=0,
)  # fmt: skip


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def layout(mlp: nn.Module) -> list:
    """(in, out) of each linear layer and the affine flag of each BatchNorm."""
    return [
        (m.in_features, m.out_features) if isinstance(m, nn.Linear) else m.affine
        for m in mlp
        if isinstance(m, nn.Linear | nn.BatchNorm1d)
    ]


def test_mocov3_paper_defaults():
    model = MoCoV3()
    hp = model.hparams
    assert (hp.temperature, hp.tau_base, hp.tau_final) == (1.0, 0.99, 1.0)
    assert (hp.optimizer, hp.lr, hp.weight_decay) == ("lars", 0.6, 1e-6)
    assert layout(model.projector) == [(512, 4096), True, (4096, 4096), True, (4096, 256), False]
    assert layout(model.predictor) == [(256, 4096), True, (4096, 256), False]
    official = MoCoV3(**{**SMALL, "proj_num_layers": 2, "pred_last_batch_norm": False})
    assert layout(official.predictor) == [(16, 32), True, (32, 16)]
    assert len(layout(official.projector)) == 4


def test_mocov3_required_callbacks():
    callbacks = MoCoV3(**SMALL).configure_callbacks()
    ema = next(c for c in callbacks if isinstance(c, EMA))
    assert (ema.schedule, ema.base_tau, ema.final_tau) == ("cosine", 0.99, 1.0)
    assert ema.buffers == "leave"  # official _update_momentum_encoder: parameters() only
    assert any(isinstance(c, NonFiniteLossGuard) for c in callbacks)


def test_mocov3_loss_is_2T_times_symmetric_info_nce():
    data = SyntheticViews(batch_size=4)
    model = MoCoV3(**SMALL, temperature=0.2, **data.link())
    model.log = lambda *a, **k: None
    (x1, x2), labels = next(iter(data.train_dataloader()))
    out = model.training_step(([x1, x2], labels), 0)

    def ctr(q, k):  # -log exp(q_i.k_i / T) / sum_j exp(q_i.k_j / T), times 2T
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.T / 0.2
        return 2 * 0.2 * (torch.logsumexp(logits, 1) - logits.diag()).mean()

    with torch.no_grad():
        q1, q2 = (model.predictor(model.projector(model.backbone(x))) for x in (x1, x2))
        k1, k2 = model.teacher(x1), model.teacher(x2)
        expected = ctr(q1, k2) + ctr(q2, k1)
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert out["features"].shape == (8, 96)


def test_mocov3_trains_and_moves_the_teacher():
    data = SyntheticViews(batch_size=8)
    model = MoCoV3(**SMALL, **data.link())
    initial = flat(nn.Sequential(model.backbone, model.projector)).clone()
    trainer = quick_trainer(max_steps=3)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    teacher, student = flat(model.teacher), flat(nn.Sequential(model.backbone, model.projector))
    assert not torch.equal(teacher, student) and not torch.equal(teacher, initial)


def test_mocov3_freezes_a_vit_patch_embedding():
    model = MoCoV3(**{**SMALL, "backbone": "test_vit"}, image_size=32, freeze_patch_embed=True)
    assert not any(p.requires_grad for p in model.backbone.model.patch_embed.parameters())
    assert any(p.requires_grad for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="patch_embed"):
        MoCoV3(**SMALL, freeze_patch_embed=True)


def test_mocov3_refuses_local_crops():
    with pytest.raises(ValueError, match="does not use local crops"):
        MoCoV3(**SMALL, num_local_crops=2)
