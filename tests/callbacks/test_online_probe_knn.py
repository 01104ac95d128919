import pytest
import torch

from lightning_ssl.callbacks import KNNMonitor, OnlineLinearProbe
from lightning_ssl.callbacks.online_probe import topk_correct
from tests.callbacks.helpers import ClusterData, FeatureModule, trainer


def test_topk_correct_is_micro_averaged_counts():
    logits = torch.tensor([[3.0, 2, 1, 0, 0, 0], [0, 3, 2, 1, 0, 0], [-1, 0, 0, 0, 1, 3]])
    labels = torch.tensor([0, 2, 0])
    assert torch.equal(topk_correct(logits, labels), torch.tensor([1.0, 2.0]))


def test_probe_and_knn_learn_separable_clusters():
    probe, knn = OnlineLinearProbe(lr=0.1), KNNMonitor(k=20, temperature=0.1)
    t = trainer(max_epochs=3, callbacks=[probe, knn])
    t.fit(FeatureModule(), ClusterData())
    metrics = t.callback_metrics
    assert metrics["val/probe_top1"] > 0.95
    assert metrics["val/knn_top1"] > 0.95
    assert metrics["val/probe_top5"] == 1.0  # 4 classes: top-5 always right
    assert "train/probe_top1" in metrics


def test_probe_on_random_labels_is_at_chance():
    torch.manual_seed(0)  # the permutation, head init and shuffle: one draw, not a new one per run
    data = ClusterData()
    data.val = (data.val[0], data.val[1][torch.randperm(len(data.val[1]))])
    t = trainer(max_epochs=2, callbacks=[OnlineLinearProbe(), KNNMonitor(k=10)])
    t.fit(FeatureModule(), data)
    assert 0.1 < t.callback_metrics["val/probe_top1"] < 0.45
    assert 0.1 < t.callback_metrics["val/knn_top1"] < 0.45


def test_probe_state_round_trip_restores_head_and_optimizer(tmp_path):
    probe = OnlineLinearProbe(lr=0.1)
    t = trainer(max_epochs=1, callbacks=[probe])
    t.fit(FeatureModule(), ClusterData())
    state = probe.state_dict()
    restored = OnlineLinearProbe(lr=0.1)
    restored.setup(t, t.lightning_module, "fit")
    restored.load_state_dict(state)
    head = restored._ready(torch.device("cpu"))
    assert torch.equal(head.weight, probe.head.weight)
    assert (
        restored.optimizer.state_dict()["state"].keys()
        == probe.optimizer.state_dict()["state"].keys()
    )
    # test() reports the restored head's accuracy under the test/ prefix
    t2 = trainer(callbacks=[restored])
    t2.test(t.lightning_module, ClusterData())
    assert t2.callback_metrics["test/probe_top1"] > 0.9


def test_probe_rejects_labels_beyond_its_classes():
    data = ClusterData(num_classes=4)
    t = trainer(max_epochs=1, callbacks=[OnlineLinearProbe()])
    with pytest.raises(ValueError, match="label 3 but the probe has 2 classes"):
        t.fit(FeatureModule(num_classes=2), data)


def test_knn_runs_every_n_epochs_and_on_the_last(monkeypatch):
    knn = KNNMonitor(k=5, every_n_epochs=2)
    epochs = []
    build = knn._build_bank
    monkeypatch.setattr(
        knn, "_build_bank", lambda t, m: (epochs.append(t.current_epoch), build(t, m))
    )
    t = trainer(max_epochs=4, callbacks=[knn])
    t.fit(FeatureModule(), ClusterData())
    # Epochs 0 and 2 by the interval; 3, the last, always (a run's final kNN figure).
    assert epochs == [0, 2, 3]
