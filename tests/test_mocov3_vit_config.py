"""The shipped MoCo v3 ViT-S recipe: it resolves to the official values and runs a step."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_ssl.cli import run_cli
from lightning_ssl.nn.vit import sincos_2d_position_embedding

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mocov3" / "imagenet_vit_small.yaml"
TINY_VIT = "--model.init_args.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2}"


def test_vit_small_config_fast_dev_run_with_a_tiny_vit(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "fit",
            f"--config={CONFIG}",
            "--trainer.fast_dev_run=1",
            "--trainer.precision=32",
            "--trainer.accelerator=cpu",
            f"--data.init_args.data_dir={data_root / 'imagewoof2-160'}",
            "--data.init_args.image_size=32",
            "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=2",
            TINY_VIT,
            "--model.init_args.proj_hidden_dim=64",
            "--model.init_args.pred_hidden_dim=64",
        ]
    )
    model, hp = cli.model, cli.model.hparams
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.warmup_epochs) == ("adamw", 1.5e-4, 0.1, 40)
    assert (hp.temperature, hp.tau_base, hp.tau_final) == (0.2, 0.99, 1.0)
    assert cli.config["fit.trainer.max_epochs"] == 300 and hp.freeze_patch_embed
    vit = model.backbone.model
    assert not vit.pos_embed.requires_grad and not vit.patch_embed.proj.weight.requires_grad
    torch.testing.assert_close(vit.pos_embed.data, sincos_2d_position_embedding((2, 2), 32))
    assert torch.equal(vit.patch_embed.proj.weight, model.teacher[0].model.patch_embed.proj.weight)
    # the official AdamW decays model.parameters(): biases, norms and tokens too
    groups = cli.trainer.optimizers[0].param_groups
    assert {g["weight_decay"] for g in groups} == {0.1}
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
