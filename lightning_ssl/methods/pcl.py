"""PCL (Li et al., 2021): MoCo v2 plus a contrast of each query with its cluster's prototype."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from lightning_ssl import distributed
from lightning_ssl.callbacks.clustering import PrototypeClustering
from lightning_ssl.data.sampling import derive_seed
from lightning_ssl.losses import info_nce_loss, proto_nce_loss
from lightning_ssl.methods.moco import MoCo
from lightning_ssl.nn.clusters import Prototypes, sample_candidates


class PCL(MoCo):
    """Prototypical Contrastive Learning of Unsupervised Representations (PCL v2).

    MoCo v2 (:class:`MoCo`: query ``q``, momentum key, a queue of negatives, InfoNCE) plus
    ProtoNCE's prototype term. After ``proto_warmup_epochs`` epochs of InfoNCE alone, at the
    start of every epoch (the E-step) the momentum encoder's normalised features of the whole
    training set, un-augmented, are clustered by k-means into ``K_m`` clusters for each
    granularity ``m``, each prototype ``c`` gets a concentration ``phi`` (eq. 12, official
    ``run_kmeans``), and each query is contrasted with its image's prototype against the other
    prototypes of the global batch and ``r = num_negative_prototypes`` sampled ones, with
    temperature ``phi`` (:func:`~lightning_ssl.losses.proto_nce_loss`; the M-step):
    ``loss = InfoNCE + mean_m ProtoNCE_m``.

    The batches carry each image's dataset index (``needs_sample_indices``); prototypes,
    concentrations and every image's clusters (``N`` per granularity) are buffers of
    :attr:`prototypes`, identical on every process (clustered on process 0, broadcast) and saved
    in checkpoints with the epoch they belong to (a resume mid-epoch keeps them). The negative
    prototypes are drawn from a seed and the batch count: the same on every process and after a
    resume. Clustering runs on the accelerator (:mod:`lightning_ssl.nn.kmeans`).

    Args:
        num_clusters: ``K`` of each granularity (ImageNet, official: 25000, 50000, 100000).
        num_negative_prototypes: ``r`` sampled negative prototypes (official ``--pcl-r``,
            16384); all other prototypes when fewer.
        proto_warmup_epochs: epochs of InfoNCE alone (official ``--warmup-epoch``: 20).
        concentration_alpha: ``alpha`` of the concentration estimate (paper: 10).
        kmeans_iterations: Lloyd steps per k-means run (official faiss ``niter``: 20).
        kmeans_restarts: k-means runs, the best kept (official ``nredo``: 5).
        max_points_per_centroid: k-means trains on at most ``K`` times this many images
            (official: 1000).
        cluster_seed: seed of k-means (granularity ``m`` uses ``cluster_seed + m``, as the
            official code) and of the negative prototype draws.
        temperature: InfoNCE temperature and mean ``phi`` (official PCL v2: 0.2).
        queue_size: MoCo queue length (official ``--pcl-r``: 16384).
        **kwargs: :class:`MoCo`'s arguments (momentum 0.999, MLP head, SGD lr 0.03, ...).

    Examples:
        >>> model = PCL(backbone="timm:test_resnet", num_clusters=[4, 8], queue_size=16,
        ...             proj_hidden_dim=32, proj_dim=16)
        >>> views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
        >>> out = model.training_step((views, torch.zeros(4), torch.arange(4)), 0)
        ... # doctest: +SKIP
    """

    needs_sample_indices: ClassVar[bool] = True

    def __init__(
        self,
        num_clusters: Sequence[int] = (25000, 50000, 100000),
        num_negative_prototypes: int = 16384,
        proto_warmup_epochs: int = 20,
        concentration_alpha: float = 10.0,
        kmeans_iterations: int = 20,
        kmeans_restarts: int = 5,
        max_points_per_centroid: int = 1000,
        cluster_seed: int = 0,
        temperature: float = 0.2,
        queue_size: int = 16384,
        **kwargs: Any,
    ) -> None:
        super().__init__(temperature=temperature, queue_size=queue_size, **kwargs)
        _check_pcl_values(self.hparams)
        self.prototypes = Prototypes(len(num_clusters))
        # Identical on every rank by construction (broadcast): DDP need not broadcast them.
        self._ddp_params_and_buffers_to_ignore = self.prototypes.buffer_names("prototypes.")
        self._draws = 0  # negative draws without a trainer (unit tests)

    def configure_callbacks(self) -> list[L.Callback]:
        hp = self.hparams
        options = dict(
            iterations=hp.kmeans_iterations,
            restarts=hp.kmeans_restarts,
            max_points_per_centroid=hp.max_points_per_centroid,
        )
        clustering = PrototypeClustering(
            self.prototypes,
            self.teacher,
            hp.num_clusters,
            hp.proto_warmup_epochs,
            hp.temperature,
            hp.concentration_alpha,
            hp.cluster_seed,
            options,
        )
        return [*super().configure_callbacks(), clustering]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        if len(batch) != 3:
            raise ValueError("PCL needs (views, labels, indices) batches: sample_indices")
        (x1, x2, *_), _, indices = batch
        pairs = [(x1, x2), (x2, x1)] if self.hparams.symmetric else [(x1, x2)]  # (query, key)
        h = [self.backbone(x_q) for x_q, _ in pairs]
        q = [self.projector(h_i) for h_i in h]
        k = [self.momentum_keys(x_k) for _, x_k in pairs]
        T, negatives = self.hparams.temperature, self.queue.valid()
        info_nce = [info_nce_loss(q_i, k_i, T, negatives) for q_i, k_i in zip(q, k, strict=True)]
        terms = {"info_nce": torch.stack(info_nce).mean()}
        loss = terms["info_nce"]
        if self.prototypes.ready:
            terms["proto_nce"] = torch.stack([self.proto_nce(q_i, indices) for q_i in q]).mean()
            loss = loss + terms["proto_nce"]
        out = self.step_output(loss, h, embeddings=q, **terms)
        out["queue_keys"] = torch.cat(k)
        return out

    def proto_nce(self, q: Tensor, indices: Tensor) -> Tensor:
        """Mean over the granularities of ProtoNCE of ``q`` (the images ``indices``)."""
        everyone = distributed.gather_no_grad(indices)  # the global batch's clusters
        generator = self.negatives_generator(q.device)
        losses = []
        for level in self.prototypes.clusterings():
            assignments = level.assignments
            candidates = sample_candidates(
                assignments[everyone],
                level.num_clusters,
                self.hparams.num_negative_prototypes,
                generator,
            )
            losses.append(
                proto_nce_loss(
                    q, level.centroids, level.concentration, assignments[indices], candidates
                )
            )
        return torch.stack(losses).mean()

    def negatives_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded by the batch count: the same draws on every rank and on resume."""
        trainer = self._trainer
        count = trainer.fit_loop.epoch_loop.batch_progress.total.ready if trainer else self._draws
        self._draws += 1
        return torch.Generator(device).manual_seed(derive_seed(self.hparams.cluster_seed, count))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Give the prototype buffers the checkpoint's shapes (they depend on the data)."""
        self.prototypes.match_shapes(checkpoint.get("state_dict", {}), "prototypes.")
        super().on_load_checkpoint(checkpoint)


def _check_pcl_values(hp: Any) -> None:
    """PCL's own arguments: one message naming the argument and what it must be."""
    clusters = list(hp.num_clusters)
    if not clusters or any(not isinstance(k, int) or k < 2 for k in clusters):
        raise ValueError(f"PCL: num_clusters must be integers >= 2, got {clusters}")
    counts = {
        "num_negative_prototypes": (hp.num_negative_prototypes, 1),
        "proto_warmup_epochs": (hp.proto_warmup_epochs, 0),
        "kmeans_iterations": (hp.kmeans_iterations, 1),
        "kmeans_restarts": (hp.kmeans_restarts, 1),
        "max_points_per_centroid": (hp.max_points_per_centroid, 1),
        "cluster_seed": (hp.cluster_seed, 0),
    }
    for name, (value, low) in counts.items():
        if not isinstance(value, int) or value < low:
            raise ValueError(f"PCL: {name} must be an integer >= {low}, got {value}")
    if not hp.concentration_alpha > 0:
        raise ValueError(f"PCL: concentration_alpha must be > 0, got {hp.concentration_alpha}")
