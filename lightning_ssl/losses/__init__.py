"""Self-supervised losses: pure functions of embeddings, correct across processes.

Every loss runs in float32 whatever autocast is active and uses the global batch where the
method needs it (negatives, batch statistics, Sinkhorn codes, DINO's center).
"""

from lightning_ssl.losses.barlow_twins import barlow_twins_loss
from lightning_ssl.losses.clip import clip_loss, tiled_clip_loss
from lightning_ssl.losses.contrastive import info_nce_loss, nt_xent_loss
from lightning_ssl.losses.cpc import cpc_loss
from lightning_ssl.losses.dino import (
    dino_cross_entropy,
    dino_loss,
    dino_teacher_entropy,
    update_dino_center,
)
from lightning_ssl.losses.ibot import (
    ibot_patch_loss,
    koleo_loss,
    mean_entropy,
    teacher_targets,
    update_patch_center,
)
from lightning_ssl.losses.ijepa import ijepa_loss
from lightning_ssl.losses.instance_discrimination import instance_softmax_loss, nce_loss
from lightning_ssl.losses.mae import mae_loss
from lightning_ssl.losses.prototypical import proto_nce_loss
from lightning_ssl.losses.similarity import (
    negative_cosine_similarity,
    normalized_squared_distance,
)
from lightning_ssl.losses.swav import sinkhorn_knopp, swav_loss
from lightning_ssl.losses.tiled import tiled_info_nce_loss, tiled_logsumexp, tiled_nt_xent_loss
from lightning_ssl.losses.vicreg import (
    VICRegTerms,
    variance_covariance,
    vicreg_loss,
    vicreg_terms,
)

__all__ = [
    "VICRegTerms",
    "barlow_twins_loss",
    "clip_loss",
    "cpc_loss",
    "dino_cross_entropy",
    "dino_loss",
    "dino_teacher_entropy",
    "ibot_patch_loss",
    "ijepa_loss",
    "info_nce_loss",
    "instance_softmax_loss",
    "koleo_loss",
    "mae_loss",
    "mean_entropy",
    "nce_loss",
    "negative_cosine_similarity",
    "normalized_squared_distance",
    "nt_xent_loss",
    "proto_nce_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "teacher_targets",
    "tiled_clip_loss",
    "tiled_info_nce_loss",
    "tiled_logsumexp",
    "tiled_nt_xent_loss",
    "update_dino_center",
    "update_patch_center",
    "variance_covariance",
    "vicreg_loss",
    "vicreg_terms",
]
