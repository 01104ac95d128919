"""Images/s of a SimCLR ResNet-18 (CIFAR stem) training step: lightning-ssl vs a plain loop.

Both sides train the same network (torchvision ResNet-18 with the CIFAR stem, projector
512 -> 2048 -> 128, NT-Xent T=0.2, SGD momentum 0.9) on the same pre-made 32 px views that
live on the device, so only the step is timed: no data loading, no augmentation.

* ``plain``: a hand-written PyTorch loop as a paper's reference code would write it: eager,
  float32, NCHW, ``loss.item()`` printed every step.
* ``ours``: :class:`lightning_ssl.methods.SimCLR` in a Lightning ``Trainer`` with the lean
  options (bf16 autocast, channels_last, compiled backbone on a GPU; fp32 on a CPU, where bf16
  convolutions are slower), the NaN guard checking every 50 steps and logging every 50 steps.

Usage::

    python benchmarks/train_step.py                          # GPU: batch 512
    OMP_NUM_THREADS=2 python benchmarks/train_step.py --batch-size 64 --steps 10  # CPU

Prints a markdown table and the ratio ours/plain measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import time

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_ssl.callbacks import NonFiniteLossGuard
from lightning_ssl.methods import SimCLR


def plain_model() -> nn.Module:
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    projector = nn.Sequential(
        nn.Linear(512, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True), nn.Linear(2048, 128)
    )
    return nn.Sequential(net, projector)


def plain_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def time_plain(views: torch.Tensor, steps: int, warmup: int) -> float:
    model = plain_model().to(views.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    for step in range(warmup + steps):
        if step == warmup:
            _sync(views.device)
            start = time.perf_counter()
        v1, v2 = views[step % len(views)]
        loss = plain_nt_xent(model(v1), model(v2), 0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # reference loops print the loss every step
    _sync(views.device)
    return time.perf_counter() - start


class _DeviceViews(Dataset):
    """Batches already on the device: ``DataLoader(batch_size=None)`` hands them out as is."""

    def __init__(self, views: torch.Tensor, length: int) -> None:
        self.views, self.length = views, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        v1, v2 = self.views[i % len(self.views)]
        return [v1, v2], torch.zeros(v1.shape[0], dtype=torch.long, device=v1.device)


class _StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.end = time.perf_counter()


def time_ours(
    views: torch.Tensor, steps: int, warmup: int, lean: bool, compile_backbone: bool | None = None
) -> float:
    """Seconds of ``steps`` steps; ``compile_backbone`` (default: ``lean`` on a GPU) apart."""
    gpu = views.device.type == "cuda"
    compiled = lean and gpu if compile_backbone is None else compile_backbone
    model = SimCLR(
        backbone="resnet18",
        cifar_stem=True,
        optimizer="sgd",
        lr=0.1,
        lr_scaling="none",
        weight_decay=1e-5,
        warmup_epochs=0.0,
        temperature=0.2,
        proj_hidden_dim=2048,
        proj_dim=128,
        image_size=32,
        channels_last=lean and gpu,
        compile_backbone=compiled,
    )
    timer = _StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if lean and gpu else "32-true",
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        log_every_n_steps=50,
        callbacks=[timer, NonFiniteLossGuard(check_every_n_steps=50)],
    )
    data = L.LightningDataModule.from_datasets(_DeviceViews(views, warmup + steps), batch_size=1)
    data.batch_size = views.shape[2]  # what the method's LR rule and logs read
    data.train_dataloader = lambda: DataLoader(_DeviceViews(views, warmup + steps), batch_size=None)
    trainer.fit(model, datamodule=data)
    return timer.end - timer.start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (compile)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batches = 4  # distinct pre-made batches, cycled
    views = torch.randn(batches, 2, args.batch_size, 3, 32, 32, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device: {device} ({name or platform.machine()}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} timed steps"
    )
    rows = []
    plain = time_plain(views, args.steps, args.warmup)
    rows.append(("plain loop (eager, fp32, NCHW)", plain))
    ours = time_ours(views, args.steps, args.warmup, lean=True)
    lean = "bf16, channels_last, compiled" if device.type == "cuda" else "fp32 (CPU)"
    rows.append((f"lightning-ssl SimCLR ({lean})", ours))
    print("\n| implementation | images/s | ms/step | vs plain |\n|---|---:|---:|---:|")
    for label, seconds in rows:
        images = args.steps * args.batch_size
        print(
            f"| {label} | {images / seconds:,.0f} | {1000 * seconds / args.steps:.1f} | "
            f"{plain / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
