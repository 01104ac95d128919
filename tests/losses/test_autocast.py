"""Every loss runs in float32 under bf16/fp16 autocast with low temperatures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lightning_ssl.losses import (
    barlow_twins_loss,
    dino_loss,
    info_nce_loss,
    negative_cosine_similarity,
    nt_xent_loss,
    sinkhorn_knopp,
    swav_loss,
    update_dino_center,
    vicreg_loss,
)


def _normalized(*shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def _case(name: str) -> tuple[Callable[..., torch.Tensor], list]:
    """A loss and its inputs; tensors (also in lists) are cast to the autocast dtype."""
    torch.manual_seed(0)
    b, d = 16, 32
    if name == "nt_xent":
        return lambda v: nt_xent_loss(v, temperature=0.07), [[torch.randn(b, d) for _ in range(2)]]
    if name == "info_nce":
        return lambda q, k: info_nce_loss(q, k, temperature=0.07), [
            torch.randn(b, d),
            torch.randn(b, d),
        ]
    if name == "info_nce_queue":
        return (
            lambda q, k, n: info_nce_loss(q, k, temperature=0.07, negatives=n),
            [torch.randn(b, d), torch.randn(b, d), torch.randn(64, d)],
        )
    if name == "negative_cosine":
        return negative_cosine_similarity, [torch.randn(b, d), torch.randn(b, d)]
    if name == "barlow_twins":
        return barlow_twins_loss, [torch.randn(b, d) * 4, torch.randn(b, d)]
    if name == "vicreg":
        return vicreg_loss, [torch.randn(b, d) * 4, torch.randn(b, d)]
    if name == "sinkhorn":
        return sinkhorn_knopp, [_normalized(b, d) @ _normalized(10, d).T]
    if name == "swav":
        scores = [_normalized(b, d) @ _normalized(10, d).T for _ in range(4)]
        codes = [torch.softmax(s / 0.05, dim=1) for s in scores[:2]]
        return lambda s, q: swav_loss(s, q, temperature=0.07), [scores, codes]
    if name == "dino":
        return (
            lambda s, t, c: dino_loss(s, t, c, student_temp=0.07, teacher_temp=0.04),
            [
                [torch.randn(b, 64) * 5 for _ in range(6)],
                [torch.randn(b, 64) * 5 for _ in range(2)],
                torch.randn(1, 64),
            ],
        )
    if name == "dino_center":
        return update_dino_center, [
            torch.randn(1, 64),
            [torch.randn(b, 64) * 100 for _ in range(2)],
        ]
    raise KeyError(name)


NAMES = ["nt_xent", "info_nce", "info_nce_queue", "negative_cosine", "barlow_twins", "vicreg",
         "sinkhorn", "swav", "dino", "dino_center"]  # fmt: skip


def _cast(obj, dtype: torch.dtype):
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype)
    return [_cast(o, dtype) for o in obj]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_float32_under_autocast(name: str, dtype: torch.dtype):
    fn, inputs = _case(name)
    low = _cast(inputs, dtype)
    with torch.autocast("cpu", dtype=dtype):
        out = fn(*low)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # exactly the float32 computation on the (exactly representable) low-precision inputs ...
    torch.testing.assert_close(out, fn(*_cast(low, torch.float32)), rtol=1e-6, atol=1e-6)
    # ... hence close to the float32 result, up to the rounding of the inputs
    torch.testing.assert_close(out, fn(*inputs), rtol=0.05, atol=0.05)
