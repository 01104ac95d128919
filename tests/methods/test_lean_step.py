"""The lean-step options change speed, never results: channels_last and an in-place compile.

Both options only reorder the same arithmetic (NHWC convolutions sum a pixel's products in
another order; a compiled graph may fuse or reorder ops), so the two runs differ by rounding
alone. How far rounding can carry a difference sets the tolerances:

- In float32 (unit roundoff ``u32 = 2**-24``) three SGD steps amplify the first step's ~1e-6
  relative difference to ~1e-4, and by how much depends on the CPU's kernels (a run on another
  CPU differed by 1.6e-4): no float32 tolerance on *trained* values is both safe and tight. We
  compare trained runs in float64, where the same reassociation is ``u32 / u64 = 2**29`` times
  smaller: the worst float32 difference we have seen (1.6e-4) becomes 3e-13, and ``RTOL64 =
  1e-9`` leaves a factor ~3000 for other CPUs while staying far below any real change (a wrong
  layout or op changes results at the 1e-2 level, float32 rounding alone at 1e-6). (The loss
  functions run in float64 too: ``losses/_precision.py`` raises only bf16/fp16 to float32.)
- The shipped float32 path is checked on one step from the same weights and batch, before any
  amplification, with the worst-case rounding bound of a reassociated sum of ``n`` terms,
  ``n * u32`` relative to the sum of the terms' magnitudes: ``n`` is the largest fan-in of the
  forward pass for the loss and the largest reduction of the backward pass (a weight gradient
  sums over batch x output pixels) for gradients, measured against each tensor's largest entry.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch

from lightning_ssl.methods import SimCLR
from tests.methods.helpers import SyntheticViews, quick_trainer

TINY = dict(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16)
RTOL64 = 1e-9  # float64 reassociation after 3 steps, see the module docstring
U32 = 2.0**-24  # float32 unit roundoff


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def _fit(**options) -> tuple[SimCLR, list[float]]:
    """Three SGD steps of a tiny SimCLR in float64 (same seed, data and order for every call)."""
    torch.manual_seed(0)
    data = SyntheticViews(n=24)
    model = SimCLR(**TINY, optimizer="sgd", **options, **data.link())
    losses = _Losses()
    trainer = quick_trainer(
        max_steps=3, limit_val_batches=0, callbacks=[losses], precision="64-true"
    )
    trainer.fit(model, data)
    assert len(losses.values) == 3
    return model, losses.values


def _assert_same_training(model: SimCLR, losses: list[float], ref: SimCLR, ref_losses: list[float]):
    assert model.state_dict().keys() == ref.state_dict().keys()  # e.g. no "_orig_mod." prefix
    torch.testing.assert_close(
        torch.tensor(losses, dtype=torch.float64),
        torch.tensor(ref_losses, dtype=torch.float64),
        rtol=RTOL64,
        atol=0.0,
    )
    for key, value in ref.state_dict().items():
        assert value.dtype in (torch.float64, torch.int64), (key, value.dtype)  # really float64
        # atol: entries that training leaves near zero (BN biases start at 0) carry the rounding
        # of the larger terms they were computed from; 1e-12 is still 1e4 below float32 noise.
        mine = model.state_dict()[key]
        torch.testing.assert_close(
            mine, value, rtol=RTOL64, atol=1e-12, msg=lambda m, key=key: f"{key}: {m}"
        )


def test_channels_last_trains_like_nchw():
    plain, plain_losses = _fit()
    nhwc, nhwc_losses = _fit(channels_last=True)
    convs = [m.weight for m in nhwc.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    _assert_same_training(nhwc, nhwc_losses, plain, plain_losses)


def _loss_and_grads(model: SimCLR, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = model.training_step(batch, 0)["loss"]
    loss.backward()
    # Parameters kept fixed (the scale-only output BN's shift) have no gradient.
    return loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]


def test_channels_last_first_float32_step_within_rounding():
    """Same float32 weights and batch: loss and gradients agree within the reassociation bound."""
    torch.manual_seed(0)
    data = SyntheticViews(n=24)
    plain = SimCLR(**TINY, **data.link())
    nhwc = SimCLR(**TINY, channels_last=True, **data.link())
    nhwc.load_state_dict(plain.state_dict())  # copies values, keeps the NHWC strides
    views, labels = next(iter(data.train_dataloader()))
    convs = [m for m in plain.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    fan_in = max(m.weight[0].numel() for m in convs)
    # a weight gradient sums over batch x output pixels; the largest map is the input's size
    reduction = len(views) * views[0].shape[0] * views[0].shape[-1] * views[0].shape[-2]
    loss, grads = _loss_and_grads(plain, (views, labels))
    nhwc_loss, nhwc_grads = _loss_and_grads(nhwc, (views, labels))
    assert all(
        m.weight.is_contiguous(memory_format=torch.channels_last)
        for m in nhwc.backbone.modules()
        if isinstance(m, torch.nn.Conv2d)
    )
    torch.testing.assert_close(nhwc_loss, loss, rtol=fan_in * U32, atol=0.0)
    assert any(g.abs().max() > 0 for g in grads)
    for g, nhwc_g in zip(grads, nhwc_grads, strict=True):
        # zero-initialised residual branches (timm's last BN) get exactly zero in both layouts
        bound = reduction * U32 * g.abs().max().item()
        torch.testing.assert_close(nhwc_g, g, rtol=0.0, atol=bound)


def test_compiled_backbone_keeps_checkpoint_keys_and_results():
    plain, plain_losses = _fit()
    compiled, compiled_losses = _fit(compile_backbone="aot_eager")  # dynamo + autograd graphs
    assert compiled.backbone._compiled_call_impl is not None
    _assert_same_training(compiled, compiled_losses, plain, plain_losses)
