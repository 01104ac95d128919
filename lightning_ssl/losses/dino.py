"""DINO (Caron et al., 2021): self-distillation loss with a centered, sharpened teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.losses._precision import float32


@float32
def dino_loss(
    student_out: list[Tensor],
    teacher_out: list[Tensor],
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """Cross-entropy between teacher and student crops (DINO, Alg. 1; official ``DINOLoss``).

    ``P_t = softmax((t - center) / teacher_temp)`` (detached) and
    ``log P_s = log_softmax(s / student_temp)``; the loss is the mean over all pairs of a
    teacher crop ``iq`` and a student crop ``v != iq`` of ``mean_b -sum_k P_t log P_s``.
    The teacher sees the global crops only, which are also the first student crops.

    Args:
        student_out: ``V`` tensors ``(B, K)``: the global crops first, then the local crops.
        teacher_out: ``G <= V`` tensors ``(B, K)`` for the global crops.
        center: ``(K,)`` or ``(1, K)`` running center of the teacher outputs
            (see :func:`update_dino_center`).
        student_temp: student temperature (DINO: 0.1).
        teacher_temp: teacher temperature (DINO: 0.04 to 0.07, warmed up).

    Returns:
        Scalar loss, averaged over this process's samples.

    Examples:
        >>> student = [torch.randn(4, 16) for _ in range(6)]  # 2 global + 4 local crops
        >>> teacher = [torch.randn(4, 16) for _ in range(2)]
        >>> dino_loss(student, teacher, center=torch.zeros(1, 16)).shape
        torch.Size([])
    """
    targets = [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher_out]
    return dino_cross_entropy(student_out, targets, student_temp)


@float32
def dino_cross_entropy(
    student_out: list[Tensor], targets: list[Tensor], student_temp: float = 0.1
) -> Tensor:
    """DINO's loss given the teacher's target distributions (centered and sharpened by
    :func:`dino_loss`, or DINOv2's Sinkhorn-Knopp codes): the mean over all pairs of a target
    crop ``iq`` and a student crop ``v != iq`` of ``mean_b -sum_k P_t log softmax(s / T_s)``.

    Args:
        student_out: ``V`` tensors ``(B, K)``: the global crops first, then the local crops.
        targets: ``G <= V`` tensors ``(B, K)``, distributions over ``K`` (treated as constants).
        student_temp: student temperature (DINO: 0.1).

    Examples:
        >>> uniform = [torch.full((2, 4), 0.25)] * 2
        >>> round(float(dino_cross_entropy([torch.zeros(2, 4)] * 2, uniform)), 4)  # log 4
        1.3863
    """
    total, terms = student_out[0].new_zeros(()), 0
    for iq, q in enumerate(targets):
        q = q.detach()
        for v, s in enumerate(student_out):
            if v != iq:
                total = total - (q * F.log_softmax(s / student_temp, dim=-1)).sum(dim=-1).mean()
                terms += 1
    return total / terms


@torch.no_grad()
@float32
def update_dino_center(center: Tensor, teacher_out: list[Tensor], momentum: float = 0.9) -> Tensor:
    """New teacher center: EMA of the teacher outputs' mean over the global batch (DINO eq. 4).

    ``center * momentum + (1 - momentum) * mean``, the mean taken over all teacher crops and all
    samples of all processes. Pure: returns a new tensor, the caller stores it.

    Args:
        center: ``(K,)`` or ``(1, K)`` current center.
        teacher_out: ``G`` tensors ``(B, K)``, teacher outputs of the global crops.
        momentum: center momentum ``m`` (DINO: 0.9).

    Returns:
        The new center, same shape as ``center`` (float32, identical on every process).

    Examples:
        >>> update_dino_center(torch.zeros(1, 2), [torch.ones(3, 2)], momentum=0.9)
        tensor([[0.1000, 0.1000]])
    """
    t = torch.cat(list(teacher_out))
    total = t.shape[0] * distributed.world_size()  # crops x samples of all processes
    batch_center = distributed.all_reduce_sum(t.sum(dim=0)) / total
    return center * momentum + batch_center * (1 - momentum)


@torch.no_grad()
@float32
def dino_teacher_entropy(teacher_out: list[Tensor], center: Tensor, teacher_temp: float) -> Tensor:
    """Mean entropy of the centered, sharpened teacher distributions (DINO, Fig. 7).

    ``dino_loss = entropy + KL(P_t || P_s)`` averaged over pairs, so ``loss - entropy`` is the KL
    term that training drives down; the entropy itself shows collapse (0: one-hot, ``log K``:
    uniform). With the loss's ``center`` and ``teacher_temp``.

    Examples:
        >>> t = [torch.zeros(2, 4)]
        >>> round(float(dino_teacher_entropy(t, torch.zeros(1, 4), 0.04)), 4)  # uniform: log 4
        1.3863
    """
    q = F.softmax((torch.cat(list(teacher_out)) - center) / teacher_temp, dim=-1)
    return -(q * q.clamp_min(1e-12).log()).sum(dim=-1).mean()
