"""Every method trains under ``bf16-mixed`` and ``16-mixed`` autocast on CPU with a finite
float32 loss and logs the collapse monitor's ``train/z_std``; low temperatures give the fp32 loss
under bf16.

The network runs in bf16 under autocast, the losses in float32 (``losses/_precision.py``).
"""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_ssl import methods
from lightning_ssl.losses import info_nce_loss, nt_xent_loss
from tests.methods.helpers import SyntheticViews, quick_trainer
from tests.methods.test_learning import COMMON, NARROW

LOCAL_CROPS = {"DINO": 2, "SwAV": 2}
GLOBAL_CROPS = {"CPC": 1}  # CPC cuts one view per image into its patches
# PCL clusters the whole training set (dataset indices in the batches): at most as many
# clusters as the 16 synthetic images
FEW_IMAGES = {"PCL": {"num_clusters": [4, 8]}}


pytestmark = pytest.mark.usefixtures("one_thread")


class _LossDtype(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.losses.append(loss.detach())


def _model(name: str, data: SyntheticViews, **overrides) -> methods.SSLMethod:
    return getattr(methods, name)(**{**COMMON, **NARROW[name], **overrides}, **data.link())


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("name", sorted(NARROW))
def test_mixed_precision_two_steps_finite_float32_loss_and_z_std(name, precision):
    """The backbone really runs in the low precision, the loss stays float32. Lightning turns
    ``16-mixed`` into ``bf16-mixed`` on CPU, so float16 is set up as on a GPU: the plugin with a
    gradient scaler, on the CPU device."""
    L.seed_everything(0)
    data = SyntheticViews(
        num_global_crops=GLOBAL_CROPS.get(name, 2),
        num_local_crops=LOCAL_CROPS.get(name, 0),
        n=16,
        sample_indices=name in FEW_IMAGES,
    )
    record = _LossDtype()
    if precision == "16-mixed":
        scaler = torch.amp.GradScaler("cpu")
        setting = {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=scaler)]}
    else:
        setting = {"precision": precision}
    trainer = quick_trainer(callbacks=[record], log_every_n_steps=1, limit_val_batches=0, **setting)
    model = _model(name, data, **FEW_IMAGES.get(name, {}))
    backbone_dtypes: set[torch.dtype] = set()
    model.backbone.register_forward_hook(lambda m, i, out: backbone_dtypes.add(out.dtype))
    trainer.fit(model, data)
    low = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    assert low in backbone_dtypes, backbone_dtypes
    assert len(record.losses) == 2
    for loss in record.losses:
        assert loss.dtype == torch.float32 and torch.isfinite(loss), (name, loss)
    z_std = trainer.callback_metrics["train/z_std"]  # logged by the base class's CollapseMonitor
    assert z_std.dtype == torch.float32 and 0.0 < z_std.item() <= 1.0, (name, z_std)


@pytest.mark.parametrize("name", ["SimCLR", "MoCo"])
@pytest.mark.parametrize("temperature", [0.04, 0.07])
def test_low_temperature_bf16_loss_matches_fp32(name, temperature):
    """Same weights, same batch: the loss under bf16 autocast equals the fp32 loss up to the
    bf16 rounding of the network's embeddings.

    Tolerance: a cross-entropy over logits ``s / T`` changes by at most ``2 max|Δs| / T`` when
    the cosine similarities ``s`` change by ``Δs`` (log-sum-exp and the positive logit are each
    1-Lipschitz in the max norm). ``|Δs| <= ‖Δu‖ + ‖Δv‖`` for unit vectors ``u, v``, so we
    measure the largest bf16 error ``max ‖Δz‖`` of a normalized embedding and bound the loss
    difference by ``4 max ‖Δz‖ / T`` (for MoCo, ``Δz`` covers its keys too; the queue is fixed).
    Then, exactly: the loss equals the float32 loss of the bf16 run's own embeddings; a loss
    computed in bf16 would round logits of size up to ``1/T = 25`` to 2^-8 relative (~0.1).
    """
    torch.manual_seed(0)
    data = SyntheticViews(n=16)
    queue = {"queue_size": 64} if name == "MoCo" else {}
    model = _model(name, data, temperature=temperature, **queue)
    batch = next(iter(data.train_dataloader()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        fp32 = model.training_step(batch, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.training_step(batch, 0)
    assert bf16["loss"].dtype == torch.float32 and torch.isfinite(bf16["loss"])
    pairs = list(zip(bf16["embeddings"], fp32["embeddings"], strict=True))
    if name == "MoCo":
        pairs.append((bf16["queue_keys"], fp32["queue_keys"]))
    dz = max(
        (F.normalize(b.float(), dim=-1) - F.normalize(f, dim=-1)).norm(dim=-1).max().item()
        for b, f in pairs
    )
    assert 0.0 < dz < 0.1  # bf16 really ran, and its error is a rounding error
    bound = 4 * dz / temperature
    assert abs(bf16["loss"].item() - fp32["loss"].item()) <= bound, (dz, bound)
    # The loss itself is float32: from the bf16 run's own embeddings, recomputed in float32
    # outside autocast, it is the same number (bf16 logits would not).
    z = [e.float() for e in bf16["embeddings"]]
    if name == "SimCLR":
        again = nt_xent_loss(z, temperature)
    else:
        keys = bf16["queue_keys"].float().chunk(len(z))
        negatives = model.queue.valid()
        again = torch.stack(
            [info_nce_loss(q, k, temperature, negatives) for q, k in zip(z, keys, strict=True)]
        ).mean()
    torch.testing.assert_close(bf16["loss"], again, rtol=1e-6, atol=1e-6)
