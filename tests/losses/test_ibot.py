"""iBOT's patch loss and centers, DINOv2's Sinkhorn-Knopp teacher and KoLeo, each against a
float64 loop of the official code's formula (bytedance/ibot ``main_ibot.py`` ``iBOTLoss``;
facebookresearch/dinov2 ``dinov2/loss/*.py``), and float32 under bf16 autocast."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_ssl.losses import (
    dino_cross_entropy,
    dino_loss,
    ibot_patch_loss,
    koleo_loss,
    mean_entropy,
    teacher_targets,
    update_patch_center,
)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _official_patch_loss(student, teacher_probs, masks, student_temp):
    """``iBOTLoss.forward``'s ``loss2`` with a loop over crops (``v == q``), images and
    patches: per image the cross-entropy summed over its masked patches / max(count, 1), the
    mean over images, the mean over crops."""
    total = 0.0
    for s, t, m in zip(student, teacher_probs, masks, strict=True):
        crop = 0.0
        for i in range(s.shape[0]):
            image = 0.0
            for n in range(s.shape[1]):
                if m[i, n]:
                    log_p = F.log_softmax(s[i, n] / student_temp, dim=-1)
                    image += float(-(t[i, n] * log_p).sum())
            crop += image / max(int(m[i].sum()), 1)
        total += crop / s.shape[0]
    return total / len(student)


def test_patch_loss_is_the_official_masked_cross_entropy():
    g = _g()
    crops, batch, patches, k = 2, 3, 6, 5
    student = [torch.randn(batch, patches, k, generator=g, dtype=torch.float64) for _ in range(2)]
    teacher = [
        F.softmax(torch.randn(batch, patches, k, generator=g, dtype=torch.float64) / 0.1, -1)
        for _ in range(crops)
    ]
    masks = [torch.rand(batch, patches, generator=g) < 0.5 for _ in range(crops)]
    masks[0][1] = False  # an image without masked patches counts as 0, as official
    expected = _official_patch_loss(student, teacher, masks, 0.1)
    all_masks = torch.cat(masks)
    got = ibot_patch_loss(
        torch.cat(student)[all_masks], torch.cat(teacher)[all_masks], all_masks, 0.1
    )
    assert got.dtype == torch.float64
    assert math.isclose(float(got), expected, rel_tol=1e-12)


def test_dino_cross_entropy_is_dino_loss_given_its_targets():
    g = _g(1)
    student = [torch.randn(4, 8, generator=g) for _ in range(4)]
    teacher = [torch.randn(4, 8, generator=g) for _ in range(2)]
    center = torch.randn(1, 8, generator=g)
    targets = [F.softmax((t - center) / 0.04, dim=-1) for t in teacher]
    torch.testing.assert_close(
        dino_cross_entropy(student, targets, 0.1), dino_loss(student, teacher, center, 0.1, 0.04)
    )


def _official_sinkhorn(teacher_output, teacher_temp, iterations=3):
    """DINOv2's ``sinkhorn_knopp_teacher`` on one process, in float64."""
    q = torch.exp(teacher_output / teacher_temp).t()
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def test_teacher_targets_are_the_official_centering_and_sinkhorn():
    t = torch.randn(10, 7, generator=_g(2), dtype=torch.float64)
    center = torch.randn(1, 7, generator=_g(3), dtype=torch.float64)
    torch.testing.assert_close(
        teacher_targets(t, 0.07, "center", center), F.softmax((t - center) / 0.07, dim=-1)
    )
    for iterations in (3, 10):
        got = teacher_targets(t, 0.07, "sinkhorn", sinkhorn_iterations=iterations)
        torch.testing.assert_close(got, _official_sinkhorn(t, 0.07, iterations))
    # The official exp overflows in float32 at low temperatures; the log domain does not.
    large = 40 * torch.randn(10, 7, generator=_g(4))
    assert torch.isinf(torch.exp(large / 0.04)).any()
    assert torch.isfinite(teacher_targets(large, 0.04, "sinkhorn")).all()


def test_patch_center_is_the_official_center2_update():
    patches = torch.randn(4, 9, 6, generator=_g(5), dtype=torch.float64)
    center = torch.randn(1, 6, generator=_g(6), dtype=torch.float64)
    batch_center = patches.mean(1).sum(0, keepdim=True) / len(patches)  # iBOTLoss.update_center
    torch.testing.assert_close(
        update_patch_center(center, patches, 0.9), center * 0.9 + batch_center * 0.1
    )


def _official_koleo(x, eps=1e-8):
    """DINOv2's ``KoLeoLoss.forward`` in float64, neighbours by a loop."""
    x = F.normalize(x, eps=eps, p=2, dim=-1)
    total = 0.0
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        j = max(others, key=lambda j: float(x[i] @ x[j]))
        total += -math.log(float(torch.linalg.vector_norm(x[i] - x[j] + 1e-8)) + eps)
    return total / len(x)


def test_koleo_is_the_official_nearest_neighbour_entropy():
    x = torch.randn(12, 5, generator=_g(7), dtype=torch.float64, requires_grad=True)
    got = koleo_loss(x)
    assert math.isclose(float(got), _official_koleo(x.detach()), rel_tol=1e-12)
    got.backward()  # spreading: pushes each sample away from its nearest neighbour
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_float32_under_bf16_autocast():
    g = _g(8)
    s = torch.randn(6, 16, generator=g, requires_grad=True)
    masks = torch.tensor([[True, False, True], [True, True, True], [False, True, False]])
    t = torch.randn(6, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s_low = (s @ torch.eye(16)).to(torch.bfloat16)
        targets = teacher_targets(t.to(torch.bfloat16), 0.04, "sinkhorn")
        outputs = [
            ibot_patch_loss(s_low, targets, masks, 0.1),
            koleo_loss(s_low),
            teacher_targets(t.to(torch.bfloat16), 0.04, "center", torch.zeros(1, 16)),
            update_patch_center(torch.zeros(1, 16), t.to(torch.bfloat16).view(2, 3, 16)),
            targets,
        ]
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outputs)
    reference = ibot_patch_loss(s.detach().bfloat16().float(), targets, masks, 0.1)
    torch.testing.assert_close(outputs[0], reference)  # the same math on the rounded inputs
    assert math.isclose(float(mean_entropy(torch.full((3, 8), 1 / 8))), math.log(8), rel_tol=1e-6)
