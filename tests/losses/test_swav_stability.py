"""SwAV under bf16 and with adversarial scores: finite codes and loss, equal to float64 formulas.

Why (issue 9: ``tests/test_precision.py``'s SwAV bf16 case gave a NaN loss at step 1 about one run
in four on another 2-core CPU). Measured on the step that failed there (this CPU, same seed):
scores within +-0.4, projection norms 2-5, gradients below 0.4, all about 10^37 below bf16's
overflow, and bf16 results differ between CPUs only by rounding (2^-8). So no formula overflowed;
a NaN that comes and goes with every seed fixed and one thread points at memory contents, i.e. a
kernel reading bytes it never wrote. The code has no uninitialised buffer on that path (synthetic
data, no queue), but bf16 GEMMs take another kernel on such CPUs: on this Zen3
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is False (no oneDNN bf16 at all, hence no
reproduction here with any ISA setting), while AVX512/AMX CPUs run them in oneDNN (v3.12.0 in
torch 2.14.1). SwAV's prototype layer was the only bf16 GEMM of that test whose reduction is not a
multiple of 32 (``grad_z = grad_scores @ C`` sums over K = 50 prototypes), the K-tail case where
oneDNN's AMX bf16 brgemm reads past the valid columns (uxlfoundation/oneDNN#5717, fixed after
v3.12). That link is the best-supported explanation, not a reproduction. The fixes, proven here:
the scores are computed in float32 (no bf16 GEMM over the prototypes, and no 2^-9 rounding
amplified 20x by ``epsilon``), and Sinkhorn-Knopp runs on ``log Q``, finite for any finite input
(the float32 ``exp`` overflowed or, shifted, underflowed to a 0/0 column).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.losses import sinkhorn_knopp, swav_loss
from lightning_ssl.methods import SwAV
from tests.losses.test_swav import _official_sinkhorn

EPS32 = 2.0**-24  # float32 unit roundoff


def _cosine_scores(b: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, 16, generator=g), dim=1)
    return z @ F.normalize(torch.randn(k, 16, generator=g), dim=1).T


def _log_rtol(scores: torch.Tensor, epsilon: float) -> float:
    """Relative tolerance of codes computed on ``log Q`` in float32 against float64.

    Every entry of ``log Q`` lies within ``R = range(scores) / epsilon`` (plus logs of B, K) and
    goes through about 10 float32 roundings (shift, divide, 1 + 2 x iterations log-sum-exp
    subtractions, the final shift), each off by at most ``2^-24`` of its size: the log of a code
    is off by <= 10 * 2^-24 * R, the code by that relative amount. A factor 16 for margin.
    """
    spread = (scores.max() - scores.min()).item() / epsilon
    return 16 * EPS32 * max(spread, 1.0)


def _assert_official_float64(codes: torch.Tensor, scores: torch.Tensor, epsilon: float) -> None:
    """``codes`` equal the official formula in float64 (codes below 1e-30 count as equal)."""
    expected = _official_sinkhorn(scores.double(), epsilon, 3)
    torch.testing.assert_close(
        codes.double(), expected, rtol=_log_rtol(scores.float(), epsilon), atol=1e-30
    )


@pytest.mark.parametrize(
    ("scale", "epsilon"),
    [(15.0, 0.05), (1.0, 0.01), (30.0, 0.1)],
    ids=["exp-overflows", "tiny-epsilon", "wide"],
)
def test_sinkhorn_adversarial_scores_equal_float64(scale, epsilon):
    """|scores| / epsilon of 100-300: the official float32 ``exp`` overflows (NaN); in float64
    it does not (nor does the smallest code, ``exp(-600)``, underflow), and the codes are that
    float64 result."""
    scores = _cosine_scores(24, 7, seed=0)
    scores[1, 0] = 1.0  # a sample on a prototype
    scores[0] = -1.0  # a sample opposite every prototype: a shifted exp underflows
    scores *= scale
    assert torch.isnan(_official_sinkhorn(scores, epsilon, 3)).any()  # the inputs really bite
    codes = sinkhorn_knopp(scores, epsilon, 3)
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    _assert_official_float64(codes, scores, epsilon)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(24))


def test_sinkhorn_global_shift_underflow_column_is_finite():
    """The previous float32 version subtracted the global max before ``exp``: a sample whose
    scores all lie more than ``104 epsilon`` below the best score became a zero column (0/0)."""
    scores = _cosine_scores(16, 9, seed=1)
    scores[0, 0] = 1.0  # a sample on a prototype
    scores[3] = -scores[3].abs() - 0.2  # a sample far from every prototype: 1.2 below
    epsilon = 0.01
    assert (scores.max() - scores[3].max()) / epsilon > 104
    shifted = _official_sinkhorn(scores - scores.max(), epsilon, 3)  # the old float32 code
    assert torch.isnan(shifted[3]).all()
    _assert_official_float64(sinkhorn_knopp(scores, epsilon, 3), scores, epsilon)


def test_sinkhorn_and_loss_take_bf16_scores_under_autocast():
    """bf16 scores of large magnitude under bf16 autocast: float32 codes and loss, equal to the
    float64 formulas of the same (bf16-rounded) values."""
    scores = [(_cosine_scores(8, 50, seed=2 + v) * 25).bfloat16() for v in range(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = [sinkhorn_knopp(s) for s in scores[:2]]
        loss = swav_loss(scores, codes, temperature=0.1)
    exact = [s.double() for s in scores]
    for c, s in zip(codes, scores[:2], strict=True):
        assert c.dtype == torch.float32
        _assert_official_float64(c, s, 0.05)
    expected = _swav_loss_float64(exact, [c.double() for c in codes], 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # Same codes on both sides; each log-softmax term is off by a few roundings of numbers up to
    # 2 max|s| / T = 500, the codes of a sample sum to 1, the sums add 2^-24 of the loss per term:
    # |error| <= 2^-24 (4 * 500 + 10 |loss|), within 2^-24 * 4000 * max(1, |loss|).
    assert abs(loss.item() - expected) <= 4000 * EPS32 * max(1.0, abs(expected))


def _swav_loss_float64(scores, codes, t: float) -> float:
    """main_swav.py's loss, in float64."""
    total = 0.0
    for i, q in enumerate(codes):
        terms = [
            -(q * torch.log_softmax(s / t, dim=1)).sum(dim=1).mean()
            for v, s in enumerate(scores)
            if v != i
        ]
        total += float(sum(terms)) / (len(scores) - 1)
    return total / len(codes)


def test_swav_scores_are_float32_under_bf16_autocast():
    """The prototype scores skip bf16 (no bf16 GEMM over the prototypes, no rounding of the
    logits): under autocast they equal the float64 product to float32 precision."""
    torch.manual_seed(0)
    model = SwAV(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, num_prototypes=50)
    z = F.normalize(torch.randn(8, 16), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.prototype_scores(z)
    assert scores.dtype == torch.float32
    expected = z.double() @ model.prototypes.weight.double().T
    # a float32 dot product of 16 terms of size <= |w|: error <= 16 * 2^-24 * sum |z_i w_i|
    bound = 16 * EPS32 * (z.abs() @ model.prototypes.weight.abs().T).double()
    assert ((scores.double() - expected).abs() <= bound).all()
