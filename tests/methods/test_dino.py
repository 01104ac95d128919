import inspect

import lightning as L
import pytest
import torch

from lightning_ssl.callbacks import EMA, NonFiniteLossGuard
from lightning_ssl.losses import update_dino_center
from lightning_ssl.methods.dino import DINO
from lightning_ssl.schedules import cosine_schedule
from tests.methods.helpers import SyntheticViews, quick_trainer

HEAD = dict(hidden_dim=32, bottleneck_dim=16, out_dim=64)
VIT = dict(backbone="vit_tiny_patch16_224", backbone_kwargs={"depth": 2, "drop_path_rate": 0.1})
RESNET = dict(backbone="resnet18", cifar_stem=True)


def vit_dino(data: SyntheticViews, **kwargs) -> DINO:
    return DINO(**{**VIT, **HEAD, **data.link(), **kwargs})


def test_dino_paper_defaults():
    defaults = {k: p.default for k, p in inspect.signature(DINO).parameters.items()}
    assert defaults["out_dim"] == 65536 and defaults["bottleneck_dim"] == 256
    assert (defaults["student_temp"], defaults["warmup_teacher_temp"]) == (0.1, 0.04)
    assert (defaults["teacher_temp"], defaults["teacher_temp_warmup_epochs"]) == (0.07, 30)
    assert (defaults["center_momentum"], defaults["tau_base"], defaults["tau_final"]) == (
        0.9,
        0.996,
        1.0,
    )
    assert (defaults["weight_decay"], defaults["weight_decay_end"]) == (0.04, 0.4)
    assert (defaults["optimizer"], defaults["lr"], defaults["warmup_epochs"]) == ("adamw", 5e-4, 10)
    assert (defaults["clip_grad"], defaults["freeze_last_layer_epochs"]) == (3.0, 1)
    model = DINO(**RESNET, image_size=32, out_dim=1024)
    assert model.hparams.optimizer == "adamw" and model.hparams.weight_decay == 0.04
    assert model.center.shape == (1, 1024) and "center" in model.state_dict()
    assert model.head.last_layer.weight.shape == (1024, 256)
    assert DINO.supports_local_crops


def test_dino_required_callbacks_and_teacher_pairs():
    model = vit_dino(SyntheticViews())
    callbacks = model.configure_callbacks()
    assert any(isinstance(c, NonFiniteLossGuard) for c in callbacks)
    (ema,) = [c for c in callbacks if isinstance(c, EMA)]
    assert ema.teacher is model.teacher and (ema.base_tau, ema.final_tau) == (0.996, 1.0)
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_dino_resnet_multicrop_teacher_sees_global_crops_and_center_update():
    data = SyntheticViews(image_size=16, local_size=8, num_local_crops=2, batch_size=4)
    model = DINO(**RESNET, **HEAD, **data.link())
    teacher_inputs, teacher_out, student_inputs = [], [], []
    model.teacher.backbone.register_forward_hook(
        lambda m, args, out: teacher_inputs.append(args[0].shape)
    )
    model.teacher.head.register_forward_hook(lambda m, args, out: teacher_out.append(out))
    model.backbone.register_forward_hook(lambda m, args, out: student_inputs.append(args[0].shape))
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert teacher_inputs == [(8, 3, 16, 16)]  # both global crops in one batch, no local crop
    assert student_inputs == [(8, 3, 16, 16), (8, 3, 8, 8)]
    expected = update_dino_center(torch.zeros(1, 64), list(teacher_out[0].chunk(2)), 0.9)
    torch.testing.assert_close(model.center, expected)


def test_dino_vit_multicrop_trains_without_teacher_stochastic_depth():
    data = SyntheticViews(image_size=32, local_size=16, num_local_crops=3, batch_size=4)
    model = vit_dino(data)
    trainer = quick_trainer(max_steps=2)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert "train/ema_tau" in trainer.callback_metrics
    assert model.backbone.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model.teacher.backbone.model.blocks[-1].drop_path1.drop_prob == 0.0


class _RecordWeightDecay(L.Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, list[tuple[str, float]]]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        groups = [(g["name"], g["weight_decay"]) for g in optimizer.param_groups]
        self.steps.append((trainer.global_step, groups))


def test_dino_schedules_frozen_last_layer_and_weight_decay():
    data = SyntheticViews(num_local_crops=2, local_size=16)  # 4 steps per epoch
    model = vit_dino(data, teacher_temp_warmup_epochs=1.0)
    record = _RecordWeightDecay()
    last = {k: v.clone() for k, v in model.head.last_layer.state_dict().items()}
    mlp, backbone = model.head.mlp[0].weight.clone(), model.backbone.model.patch_embed
    patch = backbone.proj.weight.clone()
    trainer = quick_trainer(max_steps=3, callbacks=[record])
    trainer.fit(model, data)
    # Teacher temperature: 0.04 -> 0.07 linearly over 1 epoch (4 steps), then constant.
    temps = [model.teacher_temperature(s) for s in (0, 2, 4, 100)]
    assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert trainer.callback_metrics["train/teacher_temp"].item() == pytest.approx(0.04 + 0.03 / 2)
    # Weight decay: cosine 0.04 -> 0.4 over the 3 steps on decayed groups; 0 elsewhere.
    for step, groups in record.steps:
        for name, wd in groups:
            expected = 0.0 if name.endswith("no_decay") else cosine_schedule(step, 3, 0.04, 0.4)
            assert wd == pytest.approx(expected), (step, name)
    # Last layer frozen during the first epoch, the rest trains; g stays 1.
    for key, value in model.head.last_layer.state_dict().items():
        assert torch.equal(value, last[key]), key
    assert not torch.equal(model.head.mlp[0].weight, mlp)
    assert not torch.equal(backbone.proj.weight, patch)
    assert torch.equal(model.head.weight_g, torch.ones(64, 1))


def test_dino_last_layer_trains_after_the_frozen_epoch():
    data = SyntheticViews(num_local_crops=0)
    model = vit_dino(data)
    before = model.head.last_layer.parametrizations.weight.original1.clone()
    trainer = quick_trainer(max_steps=-1, max_epochs=2, limit_train_batches=1)
    trainer.fit(model, data)
    assert not torch.equal(model.head.last_layer.parametrizations.weight.original1, before)


def test_dino_clips_each_parameter_gradient_norm():
    model = vit_dino(SyntheticViews(), clip_grad=3.0)
    params = [torch.nn.Parameter(torch.zeros(4)) for _ in range(2)]
    params[0].grad, params[1].grad = torch.full((4,), 10.0), torch.full((4,), 0.5)
    model.configure_gradient_clipping(torch.optim.SGD(params, lr=0.1))
    assert params[0].grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.equal(params[1].grad, torch.full((4,), 0.5))  # below the threshold


def test_dino_features_come_from_the_teacher_backbone():
    model = vit_dino(SyntheticViews()).eval()
    with torch.no_grad():
        for p in model.teacher.backbone.parameters():
            p.add_(0.1)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.extract_features(images), model.teacher.backbone(images))
    assert not torch.allclose(model.extract_features(images), model.backbone(images))


def test_dino_teacher_keeps_its_own_batchnorm_statistics():
    """Official ``main_dino.py``: the EMA loops over ``parameters()``; the teacher runs in train
    mode, so its BN running statistics come from its own forward passes, never the student's."""
    data = SyntheticViews(image_size=16, batch_size=4)
    model = DINO(**RESNET, **HEAD, **data.link())
    (ema,) = [c for c in model.configure_callbacks() if isinstance(c, EMA)]
    assert ema.buffers == "leave"
    bn = model.teacher.backbone.model.bn1
    after_forward, after_step = [], []
    model.teacher.backbone.register_forward_hook(
        lambda m, args, out: after_forward.append(bn.running_mean.clone())
    )
    model.on_train_batch_end = lambda *a: after_step.append(bn.running_mean.clone())
    quick_trainer(max_steps=2, limit_val_batches=0).fit(model, data)
    assert len(after_step) == len(after_forward) == 2
    for own, final in zip(after_forward, after_step, strict=True):
        torch.testing.assert_close(final, own, rtol=0, atol=0)  # the EMA left them alone
    assert not torch.equal(bn.running_mean, model.backbone.model.bn1.running_mean)
