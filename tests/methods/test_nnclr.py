import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl.callbacks import NonFiniteLossGuard, QueueUpdater
from lightning_ssl.methods.nnclr import NNCLR
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(
    backbone="test_resnet", proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32, queue_size=64,
    lr=0.3, warmup_epochs=0,
)  # fmt: skip


def test_nnclr_paper_defaults():
    model = NNCLR()
    hp = model.hparams
    assert (hp.temperature, hp.optimizer, hp.lr, hp.weight_decay) == (0.1, "lars", 0.3, 1e-6)
    linear = [(m.in_features, m.out_features) for m in model.projector if isinstance(m, nn.Linear)]
    assert linear == [(512, 2048), (2048, 2048), (2048, 256)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.projector) == 3
    assert isinstance(model.projector[-1], nn.BatchNorm1d)
    linear = [(m.in_features, m.out_features) for m in model.predictor if isinstance(m, nn.Linear)]
    assert linear == [(256, 4096), (4096, 256)]
    queue = model.support_set
    assert (queue.size, queue.dim, queue.with_labels, len(queue.valid())) == (98304, 256, True, 0)
    assert NNCLR.supports_local_crops


def test_nnclr_required_callbacks():
    model = NNCLR(**SMALL)
    callbacks = model.configure_callbacks()
    updater = next(c for c in callbacks if isinstance(c, QueueUpdater))
    assert updater.queue is model.support_set and updater.output_key == "queue_keys"
    assert any(isinstance(c, NonFiniteLossGuard) for c in callbacks)


def test_nearest_neighbour_is_the_brute_force_argmax_over_valid_rows():
    model = NNCLR(**SMALL)
    z = F.normalize(torch.randn(5, 16), dim=1)
    neighbours, labels = model.nearest_neighbour(z)  # empty support set: z itself, label -1
    assert torch.equal(neighbours, z) and labels.tolist() == [-1] * 5
    model.support_set.push(F.normalize(torch.randn(20, 16), dim=1), torch.arange(20))
    neighbours, labels = model.nearest_neighbour(z)
    for i in range(5):
        similarity = [F.cosine_similarity(z[i], row, dim=0) for row in model.support_set.valid()]
        best = int(torch.stack(similarity).argmax())
        assert best < 20 and labels[i] == best  # rows 20..63 are never neighbours
        assert torch.equal(neighbours[i], model.support_set.features[best])


def test_nnclr_loss_by_hand_with_a_filled_support_set():
    data = SyntheticViews(batch_size=4)
    model = NNCLR(**SMALL, temperature=0.5, **data.link())
    model.support_set.push(F.normalize(torch.randn(64, 16), dim=1), torch.arange(64) % 4)
    logged = {}
    model.log = lambda name, value, **k: logged.update({name: value})
    (x1, x2), labels = next(iter(data.train_dataloader()))
    out = model.training_step(([x1, x2], labels), 0)

    def info_nce(anchor, candidates):  # -log exp(a_i.c_i / T) / sum_j exp(a_i.c_j / T)
        logits = F.normalize(anchor, dim=1) @ F.normalize(candidates, dim=1).T / 0.5
        return (torch.logsumexp(logits, 1) - logits.diag()).mean()

    with torch.no_grad():
        z1, z2 = model.projector(model.backbone(x1)), model.projector(model.backbone(x2))
        nn1, y1 = model.nearest_neighbour(F.normalize(z1, dim=1))
        nn2, _ = model.nearest_neighbour(F.normalize(z2, dim=1))
        expected = info_nce(nn1, model.predictor(z2)) / 2 + info_nce(nn2, model.predictor(z1)) / 2
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert torch.allclose(logged["train/nn_acc"], (y1 == labels).float().mean())
    assert torch.allclose(out["queue_keys"], F.normalize(z1, dim=1), atol=1e-6)


def test_nnclr_trains_with_local_crops_and_fills_the_support_set():
    data = SyntheticViews(batch_size=8, num_local_crops=2)
    model = NNCLR(**SMALL, **data.link())
    trainer = quick_trainer(max_steps=3)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(trainer.callback_metrics["train/nn_acc"]) <= 1.0
    queue = model.support_set
    assert int(queue.ptr) == 24 and len(queue.valid()) == 24
    assert set(queue.valid_labels().tolist()) <= set(range(4))
    assert torch.allclose(queue.valid().norm(dim=1), torch.ones(24))
