import inspect
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.callbacks import NonFiniteLossGuard, QueueUpdater
from lightning_ssl.losses import sinkhorn_knopp, swav_loss
from lightning_ssl.methods.swav import SwAV
from tests.methods.helpers import SyntheticViews, quick_trainer

HEAD = dict(proj_hidden_dim=32, proj_dim=16, num_prototypes=10)
VIT = dict(backbone="vit_tiny_patch16_224", backbone_kwargs={"depth": 1})


def vit_swav(data: SyntheticViews, **kwargs) -> SwAV:
    return SwAV(**{**VIT, **HEAD, **data.link(), **kwargs})


def test_swav_paper_defaults():
    defaults = {k: p.default for k, p in inspect.signature(SwAV).parameters.items()}
    assert (defaults["temperature"], defaults["sinkhorn_epsilon"]) == (0.1, 0.05)
    assert (defaults["sinkhorn_iterations"], defaults["freeze_prototypes_steps"]) == (3, 313)
    assert (defaults["queue_size"], defaults["queue_start_epoch"]) == (0, 15)
    assert (defaults["lr"], defaults["weight_decay"], defaults["min_lr_ratio"]) == (0.3, 1e-6, 1e-3)
    model = SwAV(backbone="resnet18", cifar_stem=True, image_size=32)
    assert model.projector[0].out_features == 2048 and model.projector[-1].out_features == 128
    assert model.prototypes.weight.shape == (3000, 128) and model.prototypes.bias is None
    assert len(model.queues) == 0 and SwAV.supports_local_crops


def test_swav_required_callbacks_with_and_without_queue():
    data = SyntheticViews()
    callbacks = vit_swav(data).configure_callbacks()
    assert any(isinstance(c, NonFiniteLossGuard) for c in callbacks)
    assert not any(isinstance(c, QueueUpdater) for c in callbacks)
    model = vit_swav(data, queue_size=16, queue_start_epoch=3)
    updaters = [c for c in model.configure_callbacks() if isinstance(c, QueueUpdater)]
    assert [(u.queue, u.output_key, u.start_epoch) for u in updaters] == [
        (model.queues[0], "queue_0", 3),
        (model.queues[1], "queue_1", 3),
    ]


def test_swav_resnet_multicrop_prototypes_normalized_and_frozen():
    data = SyntheticViews(image_size=16, local_size=8, num_local_crops=2, batch_size=4)
    model = SwAV(backbone="resnet18", cifar_stem=True, **HEAD, **data.link())
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)  # not unit norm: training_step must normalize
    used = []
    model.prototypes.register_forward_pre_hook(lambda m, args: used.append(m.weight.clone()))
    trainer = quick_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert len(used) == 2 * 4  # 2 steps x 4 crops
    for weight in used:
        torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))
    torch.testing.assert_close(model.prototypes.weight, used[0])  # frozen for 313 steps


def test_swav_prototypes_train_after_the_frozen_steps():
    data = SyntheticViews(num_local_crops=2, local_size=16, batch_size=4)
    model = vit_swav(data, freeze_prototypes_steps=1)
    before = F.normalize(model.prototypes.weight.detach(), dim=1)
    frozen = []
    model.prototypes.register_forward_pre_hook(lambda m, args: frozen.append(m.weight.clone()))
    trainer = quick_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(model, data)
    torch.testing.assert_close(frozen[4], before)  # after step 1 (frozen): still the initial
    assert not torch.allclose(frozen[8], before)  # after step 2: updated


def test_swav_queue_stores_normalized_projections_per_global_crop():
    data = SyntheticViews(num_local_crops=2, local_size=16, batch_size=4)
    model = vit_swav(data, queue_size=16, queue_start_epoch=0)
    trainer = quick_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    rows = [queue.valid() for queue in model.queues]
    assert [r.shape for r in rows] == [(8, 16), (8, 16)]
    torch.testing.assert_close(rows[0].norm(dim=1), torch.ones(8))
    assert not torch.allclose(rows[0], rows[1])


def test_swav_queue_waits_for_its_start_epoch():
    data = SyntheticViews(batch_size=4)
    model = vit_swav(data, queue_size=16, queue_start_epoch=1)
    quick_trainer(max_steps=2, limit_val_batches=0).fit(model, data)
    assert [queue.valid().shape[0] for queue in model.queues] == [0, 0]


def test_swav_codes_use_the_queue_once_full_then_keep_the_batch_rows():
    """Official ``main_swav.py``: ``use_the_queue`` once the queue's last row is non-zero."""
    model = vit_swav(SyntheticViews(), queue_size=6)
    scores = torch.randn(4, 10)
    torch.testing.assert_close(model.codes(scores, 0), sinkhorn_knopp(scores, 0.05, 3))
    stored = F.normalize(torch.randn(6, 16), dim=1)
    model.queues[1].push(stored[:5])  # 5 of 6 rows: not used yet
    torch.testing.assert_close(model.codes(scores, 1), sinkhorn_knopp(scores, 0.05, 3))
    model.queues[1].push(stored[5:])
    with_queue = torch.cat([stored @ model.prototypes.weight.T, scores])
    expected = sinkhorn_knopp(with_queue, 0.05, 3)[-4:]
    torch.testing.assert_close(model.codes(scores, 1), expected)
    torch.testing.assert_close(model.codes(scores, 0), sinkhorn_knopp(scores, 0.05, 3))


def test_swav_queue_can_be_used_before_it_is_full():
    model = vit_swav(SyntheticViews(), queue_size=6, queue_wait_until_full=False)
    scores, stored = torch.randn(4, 10), F.normalize(torch.randn(5, 16), dim=1)
    model.queues[0].push(stored)
    expected = sinkhorn_knopp(torch.cat([stored @ model.prototypes.weight.T, scores]), 0.05, 3)
    torch.testing.assert_close(model.codes(scores, 0), expected[-4:])


def test_as_few_prototypes_as_dimensions_leave_a_zero_gradient_collapse_and_are_warned():
    """With K <= d prototypes a unit projection scoring all of them equally exists; there the
    codes are uniform, the loss is exactly log K and its gradient is zero: a trap the CPU
    protocol's K=100, d=128 run fell into (loss 4.6055 = ln 100, kNN below an untrained net)."""
    torch.manual_seed(0)
    few, dim = 12, 16
    prototypes = F.normalize(torch.randn(few, dim, dtype=torch.float64), dim=1)
    z = torch.linalg.lstsq(prototypes, torch.ones(few, 1, dtype=torch.float64)).solution.T
    z = F.normalize(z.repeat(8, 1), dim=1).requires_grad_()
    scores = [z @ prototypes.T, z @ prototypes.T]
    codes = [sinkhorn_knopp(s.detach()) for s in scores]
    loss = swav_loss(scores, codes)
    loss.backward()
    torch.testing.assert_close(codes[0], torch.full_like(codes[0], 1 / few))
    torch.testing.assert_close(loss, torch.tensor(math.log(few), dtype=torch.float64))
    assert z.grad.abs().max() < 1e-12
    # more prototypes than dimensions: no projection scores them all equally
    many = F.normalize(torch.randn(3 * dim, dim, dtype=torch.float64), dim=1)
    fit = torch.linalg.lstsq(many, torch.ones(3 * dim, 1, dtype=torch.float64)).solution
    assert (many @ fit - 1).abs().max() > 0.1

    with pytest.warns(UserWarning, match=r"num_prototypes=16 <= proj_dim=16.*more prototypes"):
        SwAV(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, num_prototypes=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SwAV(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, num_prototypes=17)
