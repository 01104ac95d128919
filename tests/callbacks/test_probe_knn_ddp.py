"""The online probe and the kNN monitor under DDP: 2 gloo processes, as a launcher starts them."""

import torch
import torch.nn.functional as F

from lightning_ssl.callbacks import KNNMonitor, OnlineLinearProbe
from lightning_ssl.callbacks.online_probe import topk_correct
from lightning_ssl.nn.knn import knn_predict
from tests.callbacks.helpers import ClusterData, FeatureModule, trainer
from tests.ddp_utils import lightning_env, run_distributed


def _fit_worker(rank: int, world_size: int) -> dict:
    lightning_env(rank, world_size)
    torch.manual_seed(rank)  # different initial heads: the probe must broadcast rank 0's
    probe = OnlineLinearProbe(lr=0.1)
    t = trainer(
        max_epochs=2, devices=world_size, strategy="ddp", callbacks=[probe, KNNMonitor(k=20)]
    )
    t.fit(FeatureModule(), ClusterData(n=400, batch_size=16, noise=4.0))
    return {
        "weight": probe.head.weight.detach().clone(),
        "bias": probe.head.bias.detach().clone(),
        "probe_top1": float(t.callback_metrics["val/probe_top1"]),
        "probe_top5": float(t.callback_metrics["val/probe_top5"]),
        "knn_top1": float(t.callback_metrics["val/knn_top1"]),
    }


def test_probe_and_knn_are_synchronised_across_two_processes():
    out = run_distributed(_fit_worker, 2)
    assert torch.equal(out[0]["weight"], out[1]["weight"])
    assert torch.equal(out[0]["bias"], out[1]["bias"])
    for key in ("probe_top1", "probe_top5", "knn_top1"):
        assert out[0][key] == out[1][key]
    assert 0.4 < out[0]["knn_top1"] < 0.95  # noisy clusters: a rank's shard would differ

    # The logged figures are those of the whole validation set (both shards), not one rank's.
    data = ClusterData(n=400, noise=4.0)
    val_x, val_y = data.val
    logits = F.linear(val_x, out[0]["weight"], out[0]["bias"])
    assert (
        abs(float(topk_correct(logits, val_y, (1,))[0]) / len(val_y) - out[0]["probe_top1"]) < 1e-6
    )
    train_x, train_y = data.train
    scores = knn_predict(
        F.normalize(val_x, dim=1), F.normalize(train_x, dim=1), train_y, 4, k=20, temperature=0.1
    )
    expected = float((scores.argmax(1) == val_y).float().mean())
    assert abs(expected - out[0]["knn_top1"]) < 1e-6
