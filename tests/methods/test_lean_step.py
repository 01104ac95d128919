"""The lean-step options change speed, never results: channels_last and an in-place compile."""

from __future__ import annotations

import lightning as L
import torch

from lightning_ssl.methods import SimCLR
from tests.methods.helpers import SyntheticViews, quick_trainer

TINY = dict(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16)


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def _fit(**options) -> tuple[SimCLR, list[float]]:
    torch.manual_seed(0)
    data = SyntheticViews(n=24)
    model = SimCLR(**TINY, optimizer="sgd", **options, **data.link())
    losses = _Losses()
    quick_trainer(max_steps=3, limit_val_batches=0, callbacks=[losses]).fit(model, data)
    return model, losses.values


def test_channels_last_trains_like_nchw():
    plain, plain_losses = _fit()
    nhwc, nhwc_losses = _fit(channels_last=True)
    convs = [m.weight for m in nhwc.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert torch.allclose(torch.tensor(nhwc_losses), torch.tensor(plain_losses), rtol=1e-4)
    assert nhwc.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.allclose(nhwc.state_dict()[key], value, rtol=1e-3, atol=1e-5), key


def test_compiled_backbone_keeps_checkpoint_keys_and_results():
    plain, plain_losses = _fit()
    compiled, compiled_losses = _fit(compile_backbone="aot_eager")  # dynamo + autograd graphs
    assert compiled.backbone._compiled_call_impl is not None
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # no "_orig_mod." prefix
    assert torch.allclose(torch.tensor(compiled_losses), torch.tensor(plain_losses), rtol=1e-4)
