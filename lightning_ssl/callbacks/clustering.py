"""PCL's E-step: cluster the momentum features of the whole training set at each epoch start.

From ``start_epoch`` on, at the start of every training epoch: the momentum encoder (in eval
mode) encodes the training split with the evaluation transform (``train_eval_dataloader()``,
no augmentation), each process taking every ``world_size``-th image; the shards are gathered so
every process holds the ``N x D`` features in dataset order; process 0 runs the k-means of every
granularity and broadcasts the prototypes, concentrations and assignments, so every process
holds the same ones (official ``main_pcl.py``: ``compute_features``, ``run_kmeans`` on GPU 0,
``dist.broadcast``). They are written into the module's
:class:`~lightning_ssl.nn.clusters.Prototypes` buffers, with the epoch: a run resumed in the
middle of an epoch finds that epoch's clustering in its checkpoint and does not recompute it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lightning_ssl import distributed
from lightning_ssl.lightning_types import eval_data
from lightning_ssl.nn.clusters import Clustering, Prototypes, cluster_features

#: faiss' ``min_points_per_centroid`` in the official code: fewer features per cluster warn.
MIN_POINTS_PER_CENTROID = 10


class PrototypeClustering(L.Callback):
    """Recompute ``prototypes`` from ``encoder``'s features at the start of each epoch.

    Args:
        prototypes: the module's :class:`~lightning_ssl.nn.clusters.Prototypes` (buffers).
        encoder: the momentum encoder; its outputs are L2-normalised here.
        num_clusters: ``K`` of each granularity (official ImageNet: 25000, 50000, 100000).
        start_epoch: first epoch with prototypes (official ``--warmup-epoch``: 20).
        temperature: mean concentration ``phi`` (official: the InfoNCE temperature, 0.2).
        alpha: concentration smoothing (official: 10).
        seed: k-means seed of the first granularity (the ``m``-th uses ``seed + m``).
        kmeans_options: ``iterations`` (20), ``restarts`` (5), ``max_points_per_centroid``
            (1000), ``block_elements`` of :func:`~lightning_ssl.nn.kmeans.kmeans`.

    Examples:
        >>> def configure_callbacks(self):  # doctest: +SKIP
        ...     return [PrototypeClustering(self.prototypes, self.teacher, [250, 500, 1000])]
    """

    def __init__(
        self,
        prototypes: Prototypes,
        encoder: nn.Module,
        num_clusters: Sequence[int],
        start_epoch: int = 20,
        temperature: float = 0.2,
        alpha: float = 10.0,
        seed: int = 0,
        kmeans_options: dict[str, Any] | None = None,
    ) -> None:
        if len(num_clusters) != len(prototypes.levels):
            raise ValueError(
                f"{len(num_clusters)} granularities for {len(prototypes.levels)} prototype levels"
            )
        self.prototypes, self.encoder = prototypes, encoder
        self.num_clusters, self.start_epoch = list(num_clusters), start_epoch
        self.temperature, self.alpha, self.seed = temperature, alpha, seed
        self.kmeans_options = dict(kmeans_options or {})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch < self.start_epoch or int(self.prototypes.epoch) == epoch:
            return  # before the warm-up's end, or restored with this epoch's clustering
        features = self.encode_training_set(trainer, pl_module.device)
        self.prototypes.store(self.cluster(features), epoch)

    @torch.no_grad()
    def encode_training_set(self, trainer: L.Trainer, device: torch.device) -> Tensor:
        """``(N, D)`` normalised momentum features of every training image, on every rank."""
        loader = eval_data(trainer).train_eval_dataloader()
        dataset = loader.dataset
        size = len(dataset)  # type: ignore[arg-type]
        _check_dataset(trainer, size, self.num_clusters)
        world, rank = distributed.world_size(), distributed.rank()
        shard_loader = DataLoader(
            Subset(dataset, range(rank, size, world)),
            batch_size=loader.batch_size,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            worker_init_fn=loader.worker_init_fn,
            # the workers' seeds from this generator, not from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
        )
        was_training = self.encoder.training
        self.encoder.eval()  # official compute_features: model.eval()
        features = []
        with trainer.precision_plugin.forward_context():
            for images, *_ in shard_loader:
                if trainer.received_sigterm:  # stop within one batch (raised below)
                    break
                out = self.encoder(images.to(device, non_blocking=True))
                features.append(F.normalize(out.float(), dim=1))
        self.encoder.train(was_training)
        if trainer.received_sigterm:
            raise SIGTERMException()
        return _gather_strided(torch.cat(features), size)

    def cluster(self, features: Tensor) -> list[Clustering]:
        """The clusterings of process 0, broadcast to every process."""
        size, dim = features.shape
        if distributed.rank() == 0:
            levels = cluster_features(
                features,
                self.num_clusters,
                self.temperature,
                self.alpha,
                self.seed,
                **self.kmeans_options,
            )
        else:
            levels = [
                Clustering(
                    features.new_empty(k, dim),
                    features.new_empty(k),
                    torch.empty(size, dtype=torch.long, device=features.device),
                )
                for k in self.num_clusters
            ]
        for level in levels:
            for tensor in level:
                distributed.broadcast_(tensor, src=0)
        return levels


def _gather_strided(local: Tensor, size: int) -> Tensor:
    """Every rank's features of images ``rank, rank + W, ...`` put back in dataset order."""
    world = distributed.world_size()
    per_rank = -(-size // world)
    padded = torch.cat([local, local.new_zeros(per_rank - len(local), local.shape[1])])
    everyone = distributed.gather_no_grad(padded)  # rank-major: rank r's j-th is image r + jW
    ranks = torch.arange(world, device=local.device)[:, None]
    index = (torch.arange(per_rank, device=local.device)[None, :] * world + ranks).flatten()
    keep = index < size
    features = local.new_empty(size, local.shape[1])
    features[index[keep]] = everyone[keep]
    return features


def _check_dataset(trainer: L.Trainer, size: int, num_clusters: Sequence[int]) -> None:
    """The evaluation copy of the training split indexes like the training batches, and each
    granularity has fewer clusters than images."""
    datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
    if callable(getattr(datamodule, "dataset", None)):
        train_size = len(datamodule.dataset("train"))
        if train_size != size:
            raise ValueError(
                f"PCL clusters the {size} images of train_eval_dataloader() but the training "
                f"split has {train_size}: both must list the same images in the same order"
            )
    if max(num_clusters) > size:
        raise ValueError(
            f"PCL: num_clusters {list(num_clusters)} needs at least {max(num_clusters)} training "
            f"images, the training set has {size}: set model num_clusters below {size}"
        )
    if max(num_clusters) * MIN_POINTS_PER_CENTROID > size:
        rank_zero_warn(
            f"PCL: {size} training images for {max(num_clusters)} clusters is fewer than "
            f"{MIN_POINTS_PER_CENTROID} per cluster (faiss warns likewise)"
        )
