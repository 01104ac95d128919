"""DINO loss and center update against explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssl.losses import dino_loss, update_dino_center


def _outputs(num: int, b: int, k: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, k, generator=g) * 3 for _ in range(num)]


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def _dino_loop(student, teacher, center, ts: float, tt: float) -> float:
    """Official DINOLoss: mean over (teacher crop iq, student crop v != iq) of the CE."""
    c = center.flatten().tolist()
    total, terms = 0.0, 0
    for iq, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            ce = 0.0
            for t_row, s_row in zip(t.tolist(), s.tolist(), strict=True):
                p_t = _softmax([(x - ci) / tt for x, ci in zip(t_row, c, strict=True)])
                p_s = _softmax([x / ts for x in s_row])
                ce -= sum(pt * math.log(ps) for pt, ps in zip(p_t, p_s, strict=True))
            total += ce / t.shape[0]
            terms += 1
    return total / terms


@pytest.mark.parametrize(("ts", "tt"), [(0.1, 0.04), (0.1, 0.07), (0.2, 0.1)])
def test_dino_loss_matches_loop(ts: float, tt: float):
    # 2 global + 4 local crops
    student = _outputs(6, 5, 7, seed=0)
    teacher = _outputs(2, 5, 7, seed=1)
    center = torch.randn(1, 7)
    loss = dino_loss(student, teacher, center, student_temp=ts, teacher_temp=tt)
    assert loss.item() == pytest.approx(_dino_loop(student, teacher, center, ts, tt), rel=1e-5)


def test_dino_teacher_gets_no_gradient():
    student = [s.requires_grad_() for s in _outputs(4, 3, 5, seed=2)]
    teacher = [t.requires_grad_() for t in _outputs(2, 3, 5, seed=3)]
    dino_loss(student, teacher, torch.zeros(5)).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


@pytest.mark.parametrize("shape", [(7,), (1, 7)])
def test_center_update_formula(shape: tuple[int, ...]):
    teacher = _outputs(2, 5, 7, seed=4)
    center = torch.randn(shape)
    before = center.clone()
    m = 0.9
    new = update_dino_center(center, teacher, momentum=m)
    assert new.shape == center.shape
    torch.testing.assert_close(center, before)  # pure: input untouched
    rows = [row for t in teacher for row in t.tolist()]
    mean = [sum(r[j] for r in rows) / len(rows) for j in range(7)]
    expected = [c * m + mu * (1 - m) for c, mu in zip(before.flatten().tolist(), mean, strict=True)]
    torch.testing.assert_close(new.flatten(), torch.tensor(expected))
