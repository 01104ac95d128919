"""How much of I-JEPA's targets the predictor could read off their positions alone.

I-JEPA's targets are the target encoder's layer-normed patch tokens; its predictor knows each
target's position. The part of a token that is the same for every image at that position (its
mean over images) is therefore free to predict. This script measures, at initialisation, that
per-position mean's share of the targets' energy (mean square) on real CIFAR-10 test images,
for a config's ViT under the official initialisation (``ijepa_init: true``, truncated normal of
std 0.02) and under timm's (``ijepa_init: false``).

With small patches the official initialisation makes the patch embedding weak beside the fixed
sin-cos position embedding (its input has 3 p^2 values: 48 at 4 px, 588 at ViT-H/14's 14 px), so
most of every target is position: the CPU protocol's run collapsed that way
(``benchmarks/cpu/ijepa.yaml``).

With ``--checkpoint`` it measures trained runs instead: the share in the target encoder's and
the context encoder's tokens after training, which grows as a run collapses towards position
(the CPU protocol's run without the C-JEPA regulariser: 54% at initialisation, 75% after 18
epochs).

Example::

    python benchmarks/ijepa_position_share.py --data-dir .cache/data/cifar10-jpeg \\
        --config benchmarks/cpu/ijepa.yaml configs/ijepa/cifar10.yaml
    python benchmarks/ijepa_position_share.py --data-dir .cache/data/cifar10-jpeg \\
        --checkpoint runs/cpu/ijepa/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from lightning_ssl.checkpoint import check_checkpoint_method, load_checkpoint
from lightning_ssl.data import CIFAR10DataModule
from lightning_ssl.eval.registry import rebuild
from lightning_ssl.methods import IJEPA
from lightning_ssl.nn.ijepa import patch_tokens


def position_share(tokens: torch.Tensor) -> float:
    """Share of the energy of ``tokens`` (images, positions, dim) that is their per-position
    mean over the images.

    Example:
        >>> round(position_share(torch.ones(4, 3, 2)), 3)  # every image alike: all position
        1.0
    """
    return float(tokens.mean(0).pow(2).mean() / tokens.pow(2).mean())


def token_share(vit: torch.nn.Module, images: torch.Tensor) -> float:
    """The position share of ``vit``'s layer-normed patch tokens (I-JEPA's targets)."""
    with torch.no_grad():
        tokens = patch_tokens(vit, images)
    return position_share(F.layer_norm(tokens, tokens.shape[-1:]))


def target_share(config: Path, images: torch.Tensor, ijepa_init: bool) -> tuple[float, float]:
    """``(share of the targets that is position, patch-embedding output std / position
    embedding std)`` of the config's ViT at initialisation."""
    args = yaml.safe_load(config.read_text())["model"]["init_args"]
    torch.manual_seed(0)
    model = IJEPA(
        backbone=args["backbone"],
        backbone_kwargs=args["backbone_kwargs"],
        image_size=images.shape[-1],
        predictor_dim=args.get("predictor_dim", 384),
        predictor_depth=1,  # the predictor plays no part here
        ijepa_init=ijepa_init,
    )
    vit = model.backbone.model
    with torch.no_grad():
        ratio = float(vit.patch_embed(images).std() / vit.pos_embed.std())
    return token_share(vit, images), ratio


def trained_shares(checkpoint: dict[str, Any], images: torch.Tensor) -> dict[str, float]:
    """The position share of a trained run's target-encoder and context-encoder tokens, from
    its loaded checkpoint (:func:`lightning_ssl.checkpoint.load_checkpoint`)."""
    check_checkpoint_method(checkpoint, "IJEPA")
    model = rebuild(checkpoint, IJEPA)
    return {
        "target": token_share(model.teacher.model, images),
        "context": token_share(model.backbone.model, images),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the cifar10-jpeg folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", nargs="+", type=Path, help="at initialisation")
    source.add_argument("--checkpoint", nargs="+", type=Path, help="trained I-JEPA runs")
    parser.add_argument("--images", type=int, default=256, help="test images to average over")
    args = parser.parse_args(argv)
    data = CIFAR10DataModule(
        args.data_dir, batch_size=args.images, num_workers=0, val_subset=args.images
    )
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    images = batch[0] if torch.is_tensor(batch[0]) else batch[0][0]
    if args.checkpoint:
        print("| checkpoint | epochs | target encoder's share | context encoder's share |")
        print("|---|---|---|---|")
        for path in args.checkpoint:
            checkpoint = load_checkpoint(path)
            shares, epochs = trained_shares(checkpoint, images), checkpoint["epoch"] + 1
            print(f"| {path} | {epochs} | {shares['target']:.3f} | {shares['context']:.3f} |")
        return 0
    print("| config | init | position share of the targets | patch / position embedding std |")
    print("|---|---|---|---|")
    for config in args.config:
        for ijepa_init in (True, False):
            share, ratio = target_share(config, images, ijepa_init)
            init = "official (std 0.02)" if ijepa_init else "timm"
            print(f"| {config} | {init} | {share:.3f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
