"""PCL: the official defaults, the training step against InfoNCE + ProtoNCE, the clustering of
the momentum features at epoch starts, and 2 processes holding the same prototypes and training
like 1 process with the union batch."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_ssl.callbacks.clustering import PrototypeClustering
from lightning_ssl.data.sampling import derive_seed
from lightning_ssl.losses import info_nce_loss, proto_nce_loss
from lightning_ssl.methods import PCL
from lightning_ssl.nn.clusters import cluster_features, sample_candidates
from tests.ddp_utils import lightning_env, run_distributed
from tests.methods.helpers import SyntheticViews, quick_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

B, STEPS, N, SIZE = 8, 3, 48, 16
TINY = dict(
    backbone="timm:test_vit", image_size=SIZE, num_classes=4, proj_hidden_dim=32, proj_dim=8,
    queue_size=32, tau_base=0.9, tau_final=0.9, num_clusters=[3, 6], num_negative_prototypes=2,
    proto_warmup_epochs=0, kmeans_restarts=2, lr=0.05, weight_decay=0.0, lr_scaling="none",
)  # fmt: skip


def _quiet(model: PCL) -> PCL:
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return model


def test_official_pcl_v2_defaults():
    model = PCL(backbone="timm:test_resnet")
    hp = model.hparams
    assert list(hp.num_clusters) == [25000, 50000, 100000]  # main_pcl.py --num-cluster
    assert (hp.num_negative_prototypes, hp.queue_size, hp.proto_warmup_epochs) == (16384, 16384, 20)
    assert (hp.kmeans_iterations, hp.kmeans_restarts, hp.max_points_per_centroid) == (20, 5, 1000)
    assert (hp.concentration_alpha, hp.temperature, hp.tau_base, hp.tau_final) == (
        10.0, 0.2, 0.999, 0.999,
    )  # fmt: skip
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.mlp_head, hp.proj_dim) == (
        "sgd", 0.03, 1e-4, True, 128,
    )  # fmt: skip
    assert model.needs_sample_indices and not model.prototypes.ready
    assert len(model.prototypes.levels) == 3
    assert "prototypes.levels.2.assignments" in model._ddp_params_and_buffers_to_ignore
    (clustering,) = [c for c in model.configure_callbacks() if isinstance(c, PrototypeClustering)]
    assert clustering.encoder is model.teacher and clustering.start_epoch == 20


def test_bad_values_missing_indices_and_too_many_clusters_say_what_to_fix():
    with pytest.raises(ValueError, match="num_clusters must be integers >= 2"):
        PCL(backbone="timm:test_resnet", num_clusters=[1])
    with pytest.raises(ValueError, match="proto_warmup_epochs must be an integer >= 0"):
        PCL(backbone="timm:test_resnet", proto_warmup_epochs=-1)
    model = _quiet(PCL(**TINY))
    views = [torch.randn(2, 3, SIZE, SIZE)] * 2
    with pytest.raises(ValueError, match="sample_indices"):
        model.training_step((views, torch.zeros(2)), 0)
    data = SyntheticViews(image_size=SIZE, batch_size=4, n=8, sample_indices=True)
    model = PCL(**{**TINY, "num_clusters": [3, 9]})
    with pytest.raises(ValueError, match="set model num_clusters below 8"):
        quick_trainer(max_steps=1, limit_val_batches=0).fit(model, data)


def test_training_step_is_info_nce_plus_the_mean_proto_nce_over_granularities():
    torch.manual_seed(0)
    model = _quiet(PCL(**{**TINY, "temperature": 0.5}))
    g = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(N, 8, generator=g), dim=1)
    levels = cluster_features(features, [3, 6], temperature=0.5, restarts=1)
    model.prototypes.store(levels, epoch=0)
    x1, x2 = torch.randn(B, 3, SIZE, SIZE), torch.randn(B, 3, SIZE, SIZE)
    indices = torch.arange(5, 5 + B)
    out = model.training_step(([x1, x2], torch.zeros(B), indices), 0)
    with torch.no_grad():
        q = model.projector(model.backbone(x1))
        k = F.normalize(model.teacher(x2), dim=1)
        info_nce = info_nce_loss(q, k, 0.5, model.queue.valid())
        generator = torch.Generator().manual_seed(derive_seed(0, 0))  # seed 0, draw 0
        proto = []
        for level in levels:
            candidates = sample_candidates(level.assignments[indices], level.centroids.shape[0],
                                           2, generator)  # fmt: skip
            proto.append(proto_nce_loss(q, level.centroids, level.concentration,
                                        level.assignments[indices], candidates))  # fmt: skip
        expected = info_nce + torch.stack(proto).mean()
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert torch.allclose(out["queue_keys"], k, atol=1e-6)


def test_clusters_the_momentum_features_at_epoch_start_and_keeps_a_stored_epoch():
    torch.manual_seed(0)
    data = SyntheticViews(image_size=SIZE, batch_size=B, n=N, sample_indices=True)
    model = PCL(**TINY)
    expected_features = []
    with torch.no_grad():
        model.teacher.eval()
        for images, _ in data.train_eval_dataloader():
            expected_features.append(F.normalize(model.teacher(images), dim=1))
        model.teacher.train()
    expected = cluster_features(torch.cat(expected_features), [3, 6], 0.2, restarts=2)
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, data)  # epoch 0 starts with the initial (= student) momentum encoder
    assert int(model.prototypes.epoch) == 0 and model.teacher.training
    for level, want in zip(model.prototypes.clusterings(), expected, strict=True):
        assert torch.equal(level.assignments, want.assignments)
        assert torch.allclose(level.centroids, want.centroids, atol=1e-6)
        assert torch.allclose(level.concentration, want.concentration, atol=1e-6)
    (callback,) = [c for c in model.configure_callbacks() if isinstance(c, PrototypeClustering)]
    before = {k: v.clone() for k, v in model.prototypes.state_dict().items()}
    callback.encoder = None  # a stored epoch is kept: nothing is encoded again
    callback.on_train_epoch_start(SimpleNamespace(current_epoch=0), model)
    late = PCL(**{**TINY, "proto_warmup_epochs": 5})
    (late_callback,) = [c for c in late.configure_callbacks() if isinstance(c, PrototypeClustering)]
    late_callback.on_train_epoch_start(SimpleNamespace(current_epoch=4), late)  # warm-up: none
    assert not late.prototypes.ready
    for key, value in model.prototypes.state_dict().items():
        assert torch.equal(value, before[key]), key


class _Indexed(Dataset):
    """``STEPS`` global batches of 2B images with two fixed views each; ``rank`` takes its half;
    items are ``([view1, view2], label, dataset index)``."""

    def __init__(self, images: torch.Tensor, rank: int | None) -> None:
        g = torch.Generator().manual_seed(0)
        self.images, self.noise = images, 0.1 * torch.randn(images.shape, generator=g)
        order = torch.randperm(N, generator=g)[: STEPS * 2 * B].view(STEPS, 2, B)
        self.order = order.flatten() if rank is None else order[:, rank].flatten()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        j = int(self.order[i])
        return [self.images[j], self.images[j] + self.noise[j]], j % 4, j


class _IndexedData(L.LightningDataModule):
    """Training batches of :class:`_Indexed` and the whole training set in order for PCL."""

    num_classes = 4

    def __init__(self, rank: int | None) -> None:
        super().__init__()
        self.images = torch.randn(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        self.rank = rank

    def train_dataloader(self):
        batch = 2 * B if self.rank is None else B
        return DataLoader(_Indexed(self.images, self.rank), batch_size=batch)

    def train_eval_dataloader(self):
        return DataLoader(TensorDataset(self.images, torch.zeros(N)), batch_size=16)


def _train(rank: int | None, world_size: int) -> dict:
    torch.manual_seed(0)
    model = PCL(**TINY)
    losses: list[float] = []
    batch_end = model.on_train_batch_end

    def keep_loss(outputs, batch, batch_idx) -> None:
        losses.append(float(outputs["loss"]))
        batch_end(outputs, batch, batch_idx)

    model.on_train_batch_end = keep_loss  # type: ignore[method-assign]
    extra = {"devices": world_size, "strategy": "ddp"} if world_size > 1 else {}
    trainer = quick_trainer(
        max_steps=STEPS, limit_val_batches=0, use_distributed_sampler=False, **extra
    )
    trainer.fit(model, datamodule=_IndexedData(rank))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"losses": losses, "state": state}


def _worker(rank: int, world_size: int) -> dict:
    lightning_env(rank, world_size)
    return _train(rank, world_size)


@pytest.fixture(scope="module")
def two_processes() -> list[dict]:
    return run_distributed(_worker, 2)


def test_two_processes_hold_the_same_prototypes_and_train_like_one(two_processes):
    """Each rank encodes half the training set; process 0 clusters, every rank ends with its
    prototypes bit for bit; losses (mean of the ranks') and weights after 3 steps with ProtoNCE
    equal one process's with the union batch (the ViT has no BatchNorm)."""
    torch.set_num_threads(1)
    single = _train(None, 1)
    ranks = [r["state"] for r in two_processes]
    cluster_keys = [k for k in single["state"] if k.startswith("prototypes.")]
    assert len(cluster_keys) == 7 and int(single["state"]["prototypes.epoch"]) == 0
    for key in cluster_keys:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        if key.endswith(("assignments", "epoch")):
            assert torch.equal(ranks[0][key], single["state"][key]), key
        else:
            assert torch.allclose(ranks[0][key], single["state"][key], atol=1e-6), key
    for step in range(STEPS):
        mean = sum(r["losses"][step] for r in two_processes) / 2
        assert mean == pytest.approx(single["losses"][step], rel=1e-4)
    for key, value in single["state"].items():
        for state in ranks:
            assert torch.allclose(state[key].float(), value.float(), rtol=1e-4, atol=1e-6), key
