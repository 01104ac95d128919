"""iBOT (Zhou et al., 2022) and DINOv2 (Oquab et al., 2024): the masked patch-token
self-distillation loss, the teachers' targets (centering or Sinkhorn-Knopp) and KoLeo.

The image-level loss is DINO's (:func:`lightning_ssl.losses.dino.dino_cross_entropy` on these
targets); the patch loss distills the teacher's distribution of each patch of an unmasked crop
into the student's output at the same patch of the masked crop, on the masked patches only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_ssl.losses._precision import float32
from lightning_ssl.losses.dino import update_dino_center
from lightning_ssl.losses.swav import sinkhorn_knopp

#: How the teacher's outputs become targets: iBOT/DINO's running center, or DINOv2's
#: Sinkhorn-Knopp normalisation over the global batch.
Centering = Literal["center", "sinkhorn"]


@float32
def ibot_patch_loss(
    student_masked: Tensor, targets: Tensor, masks: Tensor, student_temp: float = 0.1
) -> Tensor:
    """Cross-entropy on the masked patches, averaged per image, then over images (iBOT's
    ``iBOTLoss`` ``loss2``; DINOv2's ``iBOTPatchLoss.forward_masked``).

    For image ``i`` with masked patches ``M_i``:
    ``l_i = 1/max(|M_i|, 1) sum_{n in M_i} -sum_k P_t[i, n, k] log softmax(s[i, n] / T_s)_k``;
    the loss is the mean of ``l_i`` over all images (all global crops of this process), so an
    image without masked patches counts as 0, as in the official code.

    Args:
        student_masked: ``(M, K)`` student outputs at the masked patches, in the order of
            ``masks.nonzero()`` (row-major: image by image, patches in grid order).
        targets: ``(M, K)`` teacher distributions at the same patches (treated as constants).
        masks: ``(S, N)`` booleans, ``True`` masked; ``M = masks.sum()``.
        student_temp: student temperature (iBOT: 0.1).

    Returns:
        Scalar loss, averaged over this process's images.

    Examples:
        >>> masks = torch.tensor([[True, False, True], [False, False, False]])
        >>> uniform = torch.full((2, 4), 0.25)
        >>> round(float(ibot_patch_loss(torch.zeros(2, 4), uniform, masks)), 4)  # log(4) / 2
        0.6931
    """
    per_token = -(targets.detach() * F.log_softmax(student_masked / student_temp, dim=-1)).sum(-1)
    counts = masks.sum(dim=1, keepdim=True).clamp(min=1).to(per_token.dtype)
    weights = (1.0 / counts).expand(masks.shape)[masks]  # 1 / |M_i| for each masked token
    return (per_token * weights).sum() / masks.shape[0]


@torch.no_grad()
@float32
def teacher_targets(
    teacher_out: Tensor,
    teacher_temp: float,
    centering: Centering = "center",
    center: Tensor | None = None,
    sinkhorn_iterations: int = 3,
) -> Tensor:
    """The teacher's target distributions, ``(M, K)`` from ``(M, K)`` outputs.

    ``center``: ``softmax((t - center) / teacher_temp)`` (DINO, iBOT; ``center`` required).
    ``sinkhorn``: DINOv2's ``sinkhorn_knopp_teacher``, ``sinkhorn_iterations`` Sinkhorn-Knopp
    steps on ``exp(t / teacher_temp)`` over the rows of all processes (their counts may
    differ, as masked patches do): :func:`lightning_ssl.losses.swav.sinkhorn_knopp` with
    ``epsilon = teacher_temp``, computed in the log domain.

    Examples:
        >>> t = torch.randn(6, 4)
        >>> teacher_targets(t, 0.07, "center", torch.zeros(1, 4)).sum(1).allclose(torch.ones(6))
        True
        >>> teacher_targets(t, 0.07, "sinkhorn").sum(1).allclose(torch.ones(6))
        True
    """
    if centering == "sinkhorn":
        return sinkhorn_knopp(teacher_out, epsilon=teacher_temp, iterations=sinkhorn_iterations)
    if center is None:
        raise ValueError("centering='center' needs the running center")
    return F.softmax((teacher_out - center) / teacher_temp, dim=-1)


@torch.no_grad()
@float32
def update_patch_center(center: Tensor, teacher_patches: Tensor, momentum: float = 0.9) -> Tensor:
    """iBOT's ``center2`` update: the EMA of the teacher's patch outputs, each image's mean over
    its patches averaged over the images of all processes (``iBOTLoss.update_center``).

    Args:
        center: ``(1, K)`` current patch center.
        teacher_patches: ``(S, N, K)`` teacher outputs of every patch of ``S`` images.
        momentum: center momentum (iBOT: 0.9).

    Examples:
        >>> update_patch_center(torch.zeros(1, 2), torch.ones(3, 5, 2), momentum=0.9)
        tensor([[0.1000, 0.1000]])
    """
    return update_dino_center(center, [teacher_patches.mean(dim=1)], momentum)


@float32
def koleo_loss(features: Tensor, eps: float = 1e-8) -> Tensor:
    """The Kozachenko-Leonenko entropy regulariser of DINOv2 (Sablayrolles et al., 2019):
    ``-1/B sum_i log(||x_i - x_nn(i)|| + eps)`` on L2-normalised features, ``nn(i)`` the
    nearest other sample (largest inner product), as DINOv2's ``KoLeoLoss``.

    Over this process's batch only, as DINOv2 (its gather is commented out); the distance is
    torch's ``pairwise_distance`` with ``eps = 1e-8`` added to the difference, as the official
    ``nn.PairwiseDistance(2, eps=1e-8)``.

    Args:
        features: ``(B, D)`` features of one crop of each image (DINOv2: the student's class
            tokens, one global crop at a time).
        eps: added inside the logarithm and to the normalisation (1e-8).

    Examples:
        >>> round(float(koleo_loss(torch.eye(3))), 4)  # every neighbour at distance sqrt(2)
        -0.3466
    """
    x = F.normalize(features, eps=eps, p=2, dim=-1)
    dots = x.detach() @ x.detach().T  # only picks the neighbours
    dots.fill_diagonal_(-1.0)  # never one's own neighbour
    neighbours = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[neighbours], eps=1e-8)
    return -torch.log(distances + eps).mean()


@torch.no_grad()
def mean_entropy(probs: Tensor) -> Tensor:
    """Mean entropy of the rows of ``probs`` (``(M, K)`` distributions): 0 one-hot (collapse
    to a prototype), ``log K`` uniform.

    Examples:
        >>> round(float(mean_entropy(torch.full((2, 4), 0.25))), 4)
        1.3863
    """
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()
