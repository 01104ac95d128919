import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ssl import distributed
from lightning_ssl.callbacks import EMA, NonFiniteLossGuard, QueueUpdater
from lightning_ssl.methods.moco import MoCo
from tests.ddp_utils import run_distributed
from tests.methods.helpers import SyntheticViews, quick_trainer

SMALL = dict(
    backbone="test_resnet", proj_hidden_dim=32, proj_dim=16, queue_size=128, tau_base=0.9,
    tau_final=0.9, lr=0.3, warmup_epochs=0,
)  # fmt: skip


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_moco_paper_defaults_v2_and_v1():
    model = MoCo()
    hp = model.hparams
    assert (hp.temperature, hp.tau_base, hp.tau_final) == (0.2, 0.999, 0.999)
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.warmup_epochs) == ("sgd", 0.03, 1e-4, 0)
    assert not hp.symmetric
    assert model.queue.size == 65536 and model.queue.valid().shape == (65536, 128)
    linear = [m for m in model.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(512, 2048), (2048, 128)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.projector)
    v1 = MoCo(backbone="test_resnet", mlp_head=False, temperature=0.07)
    assert len(v1.projector) == 1 and v1.projector[0].out_features == 128
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_moco_required_callbacks():
    callbacks = MoCo(**SMALL).configure_callbacks()
    ema = next(c for c in callbacks if isinstance(c, EMA))
    assert ema.schedule == "constant" and ema.base_tau == 0.9
    assert ema.buffers == "leave"  # official _momentum_update_key_encoder: parameters() only
    assert any(isinstance(c, QueueUpdater) and c.output_key == "queue_keys" for c in callbacks)
    assert any(isinstance(c, NonFiniteLossGuard) for c in callbacks)
    cosine = MoCo(**{**SMALL, "tau_base": 0.99, "tau_final": 0.999}).configure_callbacks()
    assert next(c for c in cosine if isinstance(c, EMA)).schedule == "cosine"


def test_moco_loss_is_info_nce_against_the_queue():
    data = SyntheticViews(batch_size=4)
    model = MoCo(**SMALL, temperature=0.5, **data.link())
    model.log = lambda *a, **k: None
    (x1, x2), labels = next(iter(data.train_dataloader()))
    out = model.training_step(([x1, x2], labels), 0)
    with torch.no_grad():
        q = F.normalize(model.projector(model.backbone(x1)), dim=1)
        k = F.normalize(model.teacher(x2), dim=1)
        queue = F.normalize(model.queue.valid(), dim=1)
        losses = []
        for i in range(4):  # -log exp(q.k+ / T) / (exp(q.k+ / T) + sum_n exp(q.n / T))
            logits = torch.cat([(q[i] @ k[i])[None], queue @ q[i]]) / 0.5
            losses.append(torch.logsumexp(logits, 0) - logits[0])
        expected = torch.stack(losses).mean()
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert torch.allclose(out["queue_keys"], k, atol=1e-6) and not out["queue_keys"].requires_grad
    assert out["features"].shape == (4, 96)


def test_moco_symmetric_trains_enqueues_both_views_and_moves_the_teacher():
    data = SyntheticViews(batch_size=8)
    model = MoCo(**SMALL, symmetric=True, **data.link())
    initial = flat(nn.Sequential(model.backbone, model.projector)).clone()
    trainer = quick_trainer(max_steps=3)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert int(model.queue.ptr) == 3 * 2 * 8  # both views' keys of 3 batches
    teacher, student = flat(model.teacher), flat(nn.Sequential(model.backbone, model.projector))
    assert not torch.equal(teacher, student) and not torch.equal(teacher, initial)
    assert torch.allclose(model.queue.features[:48].norm(dim=1), torch.ones(48))


def test_moco_refuses_local_crops():
    with pytest.raises(ValueError, match="does not use local crops"):
        MoCo(**SMALL, num_local_crops=2)


def _shuffle_worker(rank: int, world_size: int) -> dict:
    torch.manual_seed(0)  # the same model on both ranks; rank 0's permutation wins the broadcast
    model = MoCo(**SMALL)
    x = (rank * 4 + torch.arange(4.0))[:, None]
    shuffled, unshuffle = distributed.batch_shuffle(x)
    images = torch.randn(2, 4, 3, 32, 32)[rank]
    model.teacher.eval()  # per-sample outputs: shuffling must not change any key
    keys_eval = model.momentum_keys(images)
    local_eval = F.normalize(model.teacher(images), dim=1)
    model.teacher.train()  # batch statistics of the shuffled batch: keys change
    keys_train = model.momentum_keys(images)
    local_train = F.normalize(model.teacher(images), dim=1)
    return {
        "everyone": distributed.gather_no_grad(shuffled).flatten(),
        "back": distributed.batch_unshuffle(shuffled * 10, unshuffle),
        "x": x,
        "eval_same": torch.allclose(keys_eval, local_eval, atol=1e-5),
        "train_same": torch.allclose(keys_train, local_train, atol=1e-5),
    }


def test_shuffle_bn_permutes_the_global_batch_and_unshuffles_the_keys():
    out = run_distributed(_shuffle_worker, 2)
    for r in range(2):
        assert sorted(out[r]["everyone"].tolist()) == list(range(8))  # one permutation
        assert torch.equal(out[r]["back"], out[r]["x"] * 10)
        assert out[r]["eval_same"] and not out[r]["train_same"]
    x = torch.randn(3, 2)  # a single process: no-op
    shuffled, unshuffle = distributed.batch_shuffle(x)
    assert shuffled is x and distributed.batch_unshuffle(x, unshuffle) is x
