"""Full fine-tuning and the semi-supervised protocol.

Layer-wise LR decay is checked against MAE's formula parameter by parameter; the label subsets
on real CIFAR-10 / Imagewoof labels; the shipped configs run from the CLI on checkpoints of a
CNN method and a ViT method; and a checkpoint pretrained by the CLI is fine-tuned and linearly
probed at the same budget, fine-tuning winning (issue 14's "Done when").
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import torchvision
from torch import nn

from lightning_ssl.cli import run_cli
from lightning_ssl.data import CIFAR10DataModule, ImageFolderDataModule
from lightning_ssl.eval.data import LinearEvalDataModule, dataset_labels
from lightning_ssl.eval.finetune import FineTune
from lightning_ssl.eval.finetune_encoder import use_global_pool
from lightning_ssl.eval.layer_decay import layer_decay_groups
from lightning_ssl.eval.subsets import balanced_subset, dataset_file_names
from lightning_ssl.methods import MAE, SimCLR
from tests.methods.helpers import SMALL_HEADS, SyntheticViews, quick_trainer

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


def _scales_and_decays(groups: list[dict]) -> tuple[dict[int, float], dict[int, float]]:
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    return scale, decay


def test_layer_decay_follows_maes_formula_for_every_vit_parameter():
    depth, decay, wd = 4, 0.65, 0.05
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=depth, num_classes=0
    )
    use_global_pool(vit)
    head = nn.Linear(192, 10)
    groups = layer_decay_groups(vit, head, weight_decay=wd, layer_decay=decay)
    scale, weight_decay = _scales_and_decays(groups)
    count = sum(len(g["params"]) for g in groups)
    assert count == len(list(vit.parameters())) + 2  # every parameter in exactly one group
    for name, param in vit.named_parameters():
        if name.startswith("blocks."):  # block i: base x decay^(L - i)
            expected = decay ** (depth - int(name.split(".")[1]))
        elif name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            expected = decay ** (depth + 1)
        else:  # fc_norm, above the blocks
            assert name.startswith("fc_norm"), name
            expected = 1.0
        assert scale[id(param)] == pytest.approx(expected, rel=1e-12), name
        no_decay = param.ndim == 1 or name in ("cls_token", "pos_embed")
        assert weight_decay[id(param)] == (0.0 if no_decay else wd), name
    assert scale[id(head.weight)] == scale[id(head.bias)] == 1.0
    assert (weight_decay[id(head.weight)], weight_decay[id(head.bias)]) == (wd, 0.0)


def test_layer_decay_goes_by_stage_for_resnets():
    resnet = torchvision.models.resnet18()
    resnet.fc = nn.Identity()
    groups = layer_decay_groups(resnet, nn.Linear(512, 10), weight_decay=0.0, layer_decay=0.5)
    scale, _ = _scales_and_decays(groups)
    assert scale[id(resnet.conv1.weight)] == scale[id(resnet.bn1.bias)] == 0.5**5
    for k in range(1, 5):
        stage = getattr(resnet, f"layer{k}")
        assert {scale[id(p)] for p in stage.parameters()} == {0.5 ** (5 - k)}


# ----------------------------------------------------------------------------- label subsets
def test_label_fraction_is_class_balanced_seeded_and_independent_of_the_global_rng(
    cifar10_dir,
):
    data = CIFAR10DataModule(str(cifar10_dir), num_workers=0, batch_size=16)
    labels = dataset_labels(data.dataset("train_eval"))
    torch.manual_seed(1)
    picked = balanced_subset(labels, 0.013, seed=0)
    torch.manual_seed(2)  # the draw has its own generator
    assert picked == balanced_subset(labels, 0.013, seed=0)
    assert len(picked) == len(set(picked)) == 650
    assert torch.bincount(labels[picked], minlength=10).tolist() == [65] * 10
    assert picked != balanced_subset(labels, 0.013, seed=1)
    # Unequal classes: equal shares (SimCLR's files: 12 or 13 of every ImageNet class), and a
    # class smaller than its share gives all it has.
    uneven = torch.tensor([0] * 100 + [1] * 50 + [2] * 3)
    counts = torch.bincount(uneven[balanced_subset(uneven, 0.3, seed=0)]).tolist()
    assert counts == [15, 15, 3]
    with pytest.raises(ValueError, match="fewer than the 10 classes"):
        balanced_subset(labels, 0.0001, seed=0)


def test_every_rank_trains_on_its_share_of_the_same_subset(cifar10_dir):
    shards, subsets = [], []
    for rank in (0, 1):
        data = CIFAR10DataModule(str(cifar10_dir), num_workers=0, batch_size=10, seed=3)
        wrapped = LinearEvalDataModule(data, label_fraction=0.01)
        wrapped.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        subset = wrapped.labelled_dataset()
        subsets.append(list(subset.indices))
        positions = [i for i in wrapped.train_dataloader().sampler]
        shards.append({subset.indices[i] for i in positions})
    assert subsets[0] == subsets[1] and len(subsets[0]) == 500
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(subsets[0])


def test_subset_file_selects_the_listed_images(imagewoof_dir, cifar10_dir, tmp_path):
    data = ImageFolderDataModule(str(imagewoof_dir), num_workers=0, batch_size=4, image_size=64)
    names = dataset_file_names(data.dataset("train_eval"))
    listed = names[::450]  # 21 images, several classes
    (tmp_path / "subset.txt").write_text("\n".join(listed) + "\n")
    wrapped = LinearEvalDataModule(data, subset_file=str(tmp_path / "subset.txt"))
    assert dataset_file_names(wrapped.labelled_dataset()) == sorted(listed, key=names.index)
    (tmp_path / "other.txt").write_text("n01440764_10026.JPEG\n")
    with pytest.raises(ValueError, match="1 of the 1 images of subset_file are not in"):
        LinearEvalDataModule(data, subset_file=str(tmp_path / "other.txt")).labelled_dataset()
    cifar = CIFAR10DataModule(str(cifar10_dir), num_workers=0)
    with pytest.raises(TypeError, match="use label_fraction instead"):
        LinearEvalDataModule(cifar, subset_file=str(tmp_path / "subset.txt")).labelled_dataset()


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One-step checkpoints of a CNN method (SimCLR, timm ResNet) and a ViT method (MAE)."""
    root = tmp_path_factory.mktemp("pretrained")
    two = SyntheticViews(image_size=32, batch_size=8, n=16)
    one = SyntheticViews(image_size=32, batch_size=8, n=16, num_global_crops=1)
    simclr = SimCLR(
        backbone="timm:test_resnet", lr=2.0, warmup_epochs=0, **SMALL_HEADS["SimCLR"], **two.link()
    )
    mae = MAE(
        backbone="vit_tiny_patch16_224",
        backbone_kwargs={"patch_size": 8, "depth": 3},
        decoder_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        warmup_epochs=0,
        **one.link(),
    )
    for name, method, data in (("SimCLR", simclr, two), ("MAE", mae, one)):
        trainer = quick_trainer(max_steps=1, limit_val_batches=0)
        trainer.fit(method, datamodule=data)
        trainer.save_checkpoint(root / f"{name}.ckpt")
    return {name: root / f"{name}.ckpt" for name in ("SimCLR", "MAE")}


def _cli_data(config: str, data_root: Path) -> list[str]:
    if "imagenet" in config:
        return [
            f"--data.init_args.data_dir={data_root / 'imagewoof2-160'}",
            "--data.init_args.image_size=64",
            "--data.init_args.batch_size=4",
        ]
    cifar = data_root / "cifar10-jpeg"
    return [f"--data.init_args.data_dir={cifar}", "--data.init_args.batch_size=8"]


@pytest.mark.parametrize(
    "config, method",
    [
        ("finetune/cifar10", "MAE"),
        ("finetune/imagenet", "SimCLR"),
        ("semi/imagenet_1pct", "SimCLR"),
        ("semi/cifar10_10pct", "MAE"),
    ],
)
def test_shipped_finetune_configs_run_on_any_methods_checkpoint(
    config, method, checkpoints, data_root, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = REPO / f"configs/eval/{config}.yaml"
    cli = run_cli(
        [
            "fit",
            f"--config={path}",
            f"--model.init_args.pretrained={checkpoints[method]}",
            "--trainer.fast_dev_run=2",
            "--trainer.precision=32",
            "--trainer.accelerator=cpu",
            "--data.init_args.num_workers=0",
            *_cli_data(config, data_root),
        ]
    )
    model = cli.model
    assert isinstance(model, FineTune) and model.hparams.num_classes == 10
    assert 0.0 <= float(cli.trainer.callback_metrics["val/top1"]) <= 1.0
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen
    # Each group's peak lr is the scaled lr times its layer's decay factor.
    for group in cli.trainer.optimizers[0].param_groups:
        assert group["initial_lr"] == pytest.approx(model.effective_lr * group["lr_scale"])
    if method == "MAE":
        _check_vit_setup(model, checkpoints["MAE"], model.hparams.drop_path_rate)


def _check_vit_setup(model: FineTune, checkpoint: Path, drop_path_rate: float) -> None:
    vit = model.encoder.model
    assert vit.global_pool == "avg" and isinstance(vit.norm, nn.Identity)
    last = vit.blocks[-1].drop_path1
    assert getattr(last, "drop_prob", 0.0) == pytest.approx(drop_path_rate)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    # fast_dev_run moved the weights by two small steps; the patch embedding started as saved.
    start = saved["backbone.model.patch_embed.proj.weight"]
    moved = (vit.patch_embed.proj.weight.detach() - start).abs().max()
    assert moved < 0.05 * start.abs().max()


# ----------------------------------------------------------------------------- fine-tuning wins
def _budget(cifar10_dir: Path) -> list[str]:
    """The same 1,024 training and 1,000 test images, batch and seeds for every run."""
    return [
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=64",
        "--data.init_args.train_subset=1024",
        "--data.init_args.val_subset=1000",
        "--trainer.precision=32",
        "--trainer.accelerator=cpu",
        "--trainer.num_sanity_val_steps=0",
    ]


def test_finetuning_beats_the_linear_probe_of_the_same_checkpoint(
    cifar10_dir, tmp_path, monkeypatch
):
    """A SimCLR checkpoint pretrained by the CLI (tiny timm ResNet, 8 steps), then the shipped
    linear protocol and the shipped fine-tuning protocol (SimCLR's semi-supervised recipe, on
    all 1,024 images) at equal budgets: 4 epochs of 16 batches, one evaluation at the end."""
    monkeypatch.chdir(tmp_path)
    run_cli(
        [
            "fit",
            f"--config={REPO / 'configs/simclr/cifar10.yaml'}",
            "--model.init_args.backbone=timm:test_resnet",
            "--model.init_args.cifar_stem=false",
            "--model.init_args.proj_hidden_dim=64",
            "--model.init_args.proj_dim=32",
            "--trainer.max_steps=8",
            "--trainer.limit_val_batches=0",
            *_budget(cifar10_dir),
        ]
    )
    pretrained = tmp_path / "runs/simclr-cifar10/checkpoints/last.ckpt"
    budget = [
        f"--model.init_args.pretrained={pretrained}",
        "--trainer.max_epochs=4",
        "--trainer.check_val_every_n_epoch=4",
        *_budget(cifar10_dir),
    ]
    linear = run_cli(["fit", f"--config={REPO / 'configs/eval/linear/cifar10.yaml'}", *budget])
    finetune = run_cli(
        [
            "fit",
            f"--config={REPO / 'configs/eval/semi/cifar10_10pct.yaml'}",
            "--model.init_args.label_fraction=null",  # the linear probe's 1,024 images
            *budget,
        ]
    )
    assert linear.trainer.global_step == finetune.trainer.global_step == 64
    probe = float(linear.trainer.callback_metrics["val/top1"])
    tuned = float(finetune.trainer.callback_metrics["val/top1"])
    # Measured margins (seeds 0, 1, 2 of this setup): see the report; chance is 0.10. The
    # standard deviation of one accuracy on 1,000 images is <= 0.016, so 0.02 is well inside
    # the smallest margin seen and still well above noise between two equal models.
    assert tuned > probe + 0.02, (tuned, probe)
