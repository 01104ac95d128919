"""InstDisc (Wu et al., 2018): every image is its own class; a memory bank holds the weights."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_ssl import distributed
from lightning_ssl.callbacks.memory_bank import MemoryBankUpdater
from lightning_ssl.data.sampling import derive_seed
from lightning_ssl.losses import instance_softmax_loss, nce_loss
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.nn.memory_bank import MemoryBank
from lightning_ssl.optim import OptimizerName

BankDtype = Literal["float32", "float16"]


class InstDisc(SSLMethod):
    """Unsupervised Feature Learning via Non-Parametric Instance Discrimination.

    ``v = normalise(W f(x))`` (a linear 128-d head on the backbone); each training image ``i``
    has a memory bank entry ``v_i``, and ``P(i|v) = exp(v_i . v / tau) / Z`` is the
    non-parametric softmax (eq. 2). It is approximated by NCE with ``m`` noise entries drawn
    uniformly from the bank (eqs. 3-6; ``Z`` estimated once from the first batch, as the official
    ``lib/NCEAverage.py``), or computed exactly over all ``N`` entries (``num_negatives=0``, the
    official ``LinearAverage``). After each batch the entries of its images become
    ``normalise(m v_i + (1 - m) v)`` with ``m = bank_momentum``, from the features of every
    process, each index written once. ``proximal_weight`` adds ``lambda ||v - v_i||^2`` (sec. 3.4).

    The training batches carry each image's dataset index (``needs_sample_indices``); the bank
    has one row per image of ``data.dataset("train")``: ``N x 128`` values, ImageNet
    1.28 M x 128 x 4 B ~ 655 MB (``bank_dtype="float16"``: ~328 MB), the same on every process
    (seeded initial rows, gathered updates) and saved in checkpoints.

    Args:
        feature_dim: size of ``v`` (paper: 128).
        temperature: ``tau`` (paper and official ImageNet code: 0.07; official CIFAR: 0.1).
        num_negatives: NCE noise samples ``m`` per image (paper: 4096); 0: the full softmax.
        bank_momentum: momentum of the bank update (paper: 0.5).
        proximal_weight: ``lambda`` of the proximal term (official code: 0, off).
        bank_dtype: storage type of the bank rows (``float16`` halves its memory).
        bank_size: number of training images; default: read from the DataModule at ``fit``.
        bank_seed: seed of the bank's initial rows and of the noise draws (the same on every rank).
        optimizer: SGD (official code), momentum 0.9.
        lr: 0.03 for a batch of 256 (official ``main.py``).
        weight_decay: 1e-4 (official ``main.py`` default).
        warmup_epochs: 0 (none in the official code).
        **kwargs: backbone, schedule and data arguments of :class:`SSLMethod`.

    Examples:
        >>> model = InstDisc(backbone="resnet18", cifar_stem=True, image_size=32, bank_size=8,
        ...                  num_negatives=4, num_global_crops=1)
        >>> views = [torch.randn(4, 3, 32, 32)]
        >>> out = model.training_step((views, torch.zeros(4).long(), torch.arange(4)), 0)
        ... # doctest: +SKIP
    """

    needs_sample_indices: ClassVar[bool] = True
    min_global_crops: ClassVar[int] = 1

    def __init__(
        self,
        feature_dim: int = 128,
        temperature: float = 0.07,
        num_negatives: int = 4096,
        bank_momentum: float = 0.5,
        proximal_weight: float = 0.0,
        bank_dtype: BankDtype = "float32",
        bank_size: int | None = None,
        bank_seed: int = 0,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.03,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            **kwargs,
        )
        self.head = nn.Linear(self.backbone.dim, feature_dim)
        self.memory_bank: MemoryBank | None = None
        # The bank is identical on every rank by construction: DDP need not broadcast it.
        self._ddp_params_and_buffers_to_ignore = ["memory_bank.memory"]
        self._draws = 0  # noise draws without a trainer (unit tests)
        if bank_size is not None:
            self.build_bank(bank_size)

    def build_bank(self, size: int) -> None:
        """Create the ``size x feature_dim`` memory bank (once; a second size is an error)."""
        if self.memory_bank is not None:
            if self.memory_bank.size != size:
                raise ValueError(
                    f"InstDisc's memory bank has {self.memory_bank.size} rows but the training "
                    f"data has {size} images: set model bank_size to {size} (or leave it unset)"
                )
            return
        dtype = getattr(torch, self.hparams.bank_dtype)
        self.memory_bank = MemoryBank(size, self.hparams.feature_dim, dtype, self.hparams.bank_seed)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "dataset"):
            self.build_bank(len(datamodule.dataset("train")))
        elif stage == "fit" and self.memory_bank is None:
            raise ValueError(
                "InstDisc needs the number of training images for its memory bank: train with "
                "a lightning_ssl DataModule or set model bank_size"
            )

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone features ``h`` and the L2-normalised 128-d embedding ``v``."""
        h = self.backbone(x)
        return h, F.normalize(self.head(h), dim=1)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        if len(batch) != 3:
            raise ValueError("InstDisc needs (views, labels, indices) batches: sample_indices")
        views, _, indices = batch
        h, v = self.embed(views[0])
        bank = self.memory_bank
        assert bank is not None, "build_bank(size) first (done at fit from the DataModule)"
        T = self.hparams.temperature
        if self.hparams.num_negatives:
            loss = self.nce(v, indices)
        else:
            loss = instance_softmax_loss(v, bank.all_rows(), indices, T)
        terms = {}
        if self.hparams.proximal_weight:
            terms["proximal"] = (v - bank.rows(indices)).pow(2).sum(dim=1).mean()
            loss = loss + self.hparams.proximal_weight * terms["proximal"]
        out = self.step_output(loss, [h], embeddings=v, **terms)
        out["bank_features"], out["bank_indices"] = v.detach(), indices
        return out

    def nce(self, v: Tensor, indices: Tensor) -> Tensor:
        """NCE loss of ``v`` against its own entry and ``m`` uniformly drawn noise entries."""
        bank = self.memory_bank
        assert bank is not None
        noise = self.draw_noise(len(v), v.device)
        candidates = bank.rows(torch.cat([indices[:, None], noise], dim=1))
        T = self.hparams.temperature
        if torch.isnan(bank.log_normalizer):
            bank.log_normalizer.fill_(estimate_log_normalizer(v, candidates, T, bank.size))
        return nce_loss(v, candidates, T, bank.log_normalizer, bank.size)

    def draw_noise(self, batch: int, device: torch.device) -> Tensor:
        """``(batch, m)`` noise indices: this rank's rows of the global batch's draw, seeded by
        the batch count (the same draw on any number of processes and after a resume)."""
        trainer = self._trainer
        count = trainer.fit_loop.epoch_loop.batch_progress.total.ready if trainer else self._draws
        self._draws += 1
        generator = torch.Generator(device).manual_seed(derive_seed(self.hparams.bank_seed, count))
        rows = batch * distributed.world_size()
        draw = torch.randint(
            self.memory_bank.size,  # type: ignore[union-attr]
            (rows, self.hparams.num_negatives),
            generator=generator,
            device=device,
        )
        start = distributed.rank() * batch
        return draw[start : start + batch]

    def configure_callbacks(self) -> list[L.Callback]:
        # After the loss, before any checkpoint of the batch (ModelCheckpoint runs last).
        updater = MemoryBankUpdater(lambda: self.memory_bank, self.hparams.bank_momentum)
        return [*super().configure_callbacks(), updater]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Create the bank at the checkpoint's size when loading outside ``fit``."""
        rows = checkpoint.get("state_dict", {}).get("memory_bank.memory")
        if self.memory_bank is None and rows is not None:
            self.build_bank(rows.shape[0])
        super().on_load_checkpoint(checkpoint)


@torch.no_grad()
def estimate_log_normalizer(v: Tensor, candidates: Tensor, temperature: float, size: int) -> float:
    """``log Z`` with ``Z = N * mean exp(v_j . v / tau)`` over the candidates of the global batch
    (official ``NCEAverage``: ``out.mean() * outputSize`` on the first batch)."""
    scores = torch.einsum("bkd,bd->bk", candidates.float(), v.float()) / temperature
    mean = distributed.all_reduce_mean_(scores.exp().mean())
    return math.log(float(mean) * size)
