"""No code from a checkpoint (issue 10, failure 1): every loading path refuses a hostile file.

Two attacks, each planted in every entry point a user runs:

* a pickle whose ``__reduce__`` writes a marker file (runs on ``torch.load(weights_only=False)``);
* a checkpoint of plain values whose ``_class_path`` names a module that writes a marker when
  imported (placed on ``sys.path`` by the test).

Each must leave no marker; the pickle must fail with one line saying the file is not a safe
checkpoint (no traceback). Real checkpoints of every method still load, evaluate and export.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_ssl import methods
from lightning_ssl.checkpoint import CheckpointClassError, UnsafeCheckpointError, load_checkpoint
from lightning_ssl.checkpoint_io import AtomicCheckpointIO
from lightning_ssl.eval.knn_eval import KNNEvaluation
from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.eval.registry import known_classes
from lightning_ssl.export import export_backbone
from tests.cli_run import lightning_ssl_in_process
from tests.methods.helpers import SyntheticViews, quick_trainer

REPO = Path(__file__).resolve().parents[1]
UNSAFE = "is not a safe lightning-ssl checkpoint"

pytestmark = pytest.mark.usefixtures("one_thread")


class _WritesMarker:
    """Unpickling this calls ``exec``: the code writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def _pickle_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint of SimCLR with the payload among its entries."""
    torch.save(
        {
            "lightning_ssl_method": "SimCLR",
            "hyper_parameters": {"backbone": "timm:test_resnet"},
            "state_dict": {"backbone.weight": torch.zeros(2)},
            "payload": _WritesMarker(marker),
        },
        path,
    )
    return path


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a pickle checkpoint that writes ``marker`` when loaded."""
    marker = tmp_path / "MARKER"
    return _pickle_checkpoint(tmp_path / "hostile.ckpt", marker), marker


@pytest.fixture
def marker_module(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """``(folder, marker)``: ``evil_module.py`` in ``folder`` writes ``marker`` on import."""
    folder, marker = tmp_path / "modules", tmp_path / "IMPORTED"
    folder.mkdir()
    (folder / "evil_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass SimCLR: pass\nclass Evil: pass\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    return folder, marker


def _class_path_checkpoint(path: Path, class_path: str) -> Path:
    torch.save({"hyper_parameters": {"_class_path": class_path}, "state_dict": {}}, path)
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lightning-ssl ARGS`` through the console script's main in this process: a payload that
    ran or a module that was imported would show here as in a fresh process (marker files,
    ``sys.modules``), without its 5-10 s of imports."""
    return lightning_ssl_in_process(*args, cwd=cwd, env={"WANDB_MODE": "disabled"})


def _data(cifar10_dir: Path) -> list[str]:
    return [
        f"--data.init_args.data_dir={cifar10_dir}",
        "--data.init_args.num_workers=0",
        "--data.init_args.train_subset=8",
        "--data.init_args.val_subset=8",
        "--trainer.accelerator=cpu",
    ]


#: Every command that loads a user's file, as ``(args with FILE for the checkpoint)``.
ENTRY_POINTS = {
    "fit --ckpt_path FILE": ["fit", "--config=configs/simclr/cifar10.yaml", "--ckpt_path=FILE"],
    "validate --ckpt_path FILE": [
        "validate",
        "--config=configs/simclr/cifar10.yaml",
        "--ckpt_path=FILE",
    ],
    "fit --ckpt_path last": ["fit", "--config=configs/simclr/cifar10.yaml", "--ckpt_path=last"],
    "linear eval pretrained": [
        "fit",
        "--config=configs/eval/linear/cifar10.yaml",
        "--model.init_args.pretrained=FILE",
    ],
    "knn eval pretrained": [
        "validate",
        "--config=configs/eval/knn/cifar10.yaml",
        "--model.init_args.pretrained=FILE",
    ],
    "export": ["export", "FILE", "exported"],
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_command_refuses_a_pickle_that_runs_code(entry, hostile, cifar10_dir, tmp_path):
    checkpoint, marker = hostile
    args = [a.replace("FILE", str(checkpoint)) for a in ENTRY_POINTS[entry]]
    if entry == "fit --ckpt_path last":  # where --ckpt_path last looks for it
        folder = tmp_path / "runs/simclr-cifar10/checkpoints"
        folder.mkdir(parents=True)
        checkpoint.rename(folder / "last.ckpt")
        args += ["--model.init_args.backbone=timm:test_resnet"]
        args += ["--model.init_args.cifar_stem=false"]
    if args[0] != "export":
        args = [a.replace("configs/", f"{REPO}/configs/") for a in args] + _data(cifar10_dir)
    result = _cli(*args, cwd=tmp_path)
    assert not marker.exists(), "the checkpoint's code ran"
    assert result.returncode != 0
    assert UNSAFE in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_the_python_loaders_refuse_a_pickle_that_runs_code(hostile, tmp_path):
    checkpoint, marker = hostile
    raw = tmp_path / "raw.pkl"  # not a torch zip file: torch's legacy format path
    raw.write_bytes(__import__("pickle").dumps(_WritesMarker(marker)))
    loaders = [
        load_checkpoint,
        load_pretrained,
        lambda path: export_backbone(path, tmp_path / "out"),
        lambda path: KNNEvaluation(str(path)),
        AtomicCheckpointIO().load_checkpoint,  # Lightning's restore (Trainer.fit(ckpt_path=))
    ]
    for load in loaders:
        for path in (checkpoint, raw):
            with pytest.raises(UnsafeCheckpointError, match=f"{path}.* {UNSAFE}"):
                load(path)
    assert not marker.exists()


def test_a_class_path_in_the_file_is_never_imported(marker_module, tmp_path):
    _, marker = marker_module
    checkpoint = _class_path_checkpoint(tmp_path / "cls.ckpt", "evil_module.Evil")
    with pytest.raises(CheckpointClassError, match="'Evil' is not a lightning-ssl method"):
        load_pretrained(checkpoint)
    with pytest.raises(CheckpointClassError, match="'Evil' is not a lightning-ssl method"):
        export_backbone(checkpoint, tmp_path / "out")
    assert not marker.exists() and "evil_module" not in sys.modules


def test_the_cli_never_imports_a_class_path_from_the_checkpoint(
    marker_module, cifar10_dir, tmp_path
):
    """LightningCLI alone would set ``--model`` to the file's ``_class_path`` and import it."""
    _, marker = marker_module
    checkpoint = _class_path_checkpoint(tmp_path / "cls.ckpt", "evil_module.SimCLR")
    config = f"--config={REPO}/configs/simclr/cifar10.yaml"
    # ``marker_module`` puts the module's folder on sys.path: it could be imported.
    args = ["validate", config, f"--ckpt_path={checkpoint}", *_data(cifar10_dir)]
    result = _cli(*args, cwd=tmp_path)
    assert not marker.exists(), "the module named by the checkpoint was imported"
    assert "evil_module" not in sys.modules
    assert result.returncode != 0  # its empty state dict does not fit SimCLR


def test_the_registry_holds_every_method_and_evaluation():
    names = set(known_classes())
    assert set(methods.__all__) <= names and {"LinearEvaluation", "KNNEvaluation"} <= names


def _tiny(cls: type) -> dict:
    """Narrow every width argument of ``cls`` (and its bases) so a CPU step takes a second."""
    params = {p for c in cls.__mro__ for p in inspect.signature(c.__init__).parameters}
    widths = {"queue_size": 32, "num_prototypes": 8, "out_dim": 16}
    small = {p: 16 for p in params if p.endswith("_dim") or p == "hidden_dim"}
    return {**small, **{k: v for k, v in widths.items() if k in params}}


@pytest.mark.parametrize("name", [n for n in methods.__all__ if n != "SSLMethod"])
def test_real_checkpoints_of_every_method_resume_evaluate_and_export(name, tmp_path):
    cls = getattr(methods, name)
    local = 2 if cls.supports_local_crops else 0
    if name == "CLIP":  # image-text pairs and a 1-block text tower
        pytest.importorskip("open_clip")
        text = dict(text_width=16, text_layers=1, text_heads=1, context_length=8)
        small = {**_tiny(cls), **text}
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_global_crops=1,
                              caption_tokens=8)  # fmt: skip
    elif name == "MAE":  # one view through a 2-block ViT of 4 px patches
        vit = dict(patch_size=4, depth=2, embed_dim=32, num_heads=2)
        small = dict(decoder_dim=16, decoder_depth=1, decoder_num_heads=2, backbone_kwargs=vit)
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_global_crops=1)
    elif name == "IJEPA":  # one view, multi-block masks over a 2-block ViT of 4 px patches
        vit = dict(patch_size=4, depth=2, embed_dim=32, num_heads=2, class_token=False,
                   global_pool="avg", fc_norm=False)  # fmt: skip
        small = dict(predictor_dim=16, predictor_depth=1, min_keep=4, backbone_kwargs=vit)
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_global_crops=1)
    elif name == "IBOT":  # block-masked crops through a 2-block ViT of 4 px patches
        vit = dict(patch_size=4, depth=2, embed_dim=32, num_heads=2)
        small = {**_tiny(cls), "backbone_kwargs": vit}
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_local_crops=local)
    elif name == "CPC":  # one view, cut into a 7 x 7 grid of 8 px patches
        small = dict(context_hidden_dim=16, context_blocks=1)
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_global_crops=1)
    elif name == "InstDisc":  # one view; batches carry the dataset indices of the bank rows
        small = {**_tiny(cls), "bank_size": 8, "num_negatives": 4}
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_global_crops=1,
                              sample_indices=True)  # fmt: skip
    elif name == "PCL":  # dataset indices; prototypes from the first epoch (in the checkpoint)
        clusters = dict(num_clusters=[2, 3], num_negative_prototypes=2, proto_warmup_epochs=0)
        small = {**_tiny(cls), **clusters, "kmeans_restarts": 1}
        data = SyntheticViews(image_size=32, batch_size=4, n=8, sample_indices=True)
    else:
        small = _tiny(cls)
        data = SyntheticViews(image_size=32, batch_size=4, n=8, num_local_crops=local)
    backbone = "vit_tiny_patch16_224" if name in ("MAE", "IJEPA", "IBOT") else "timm:test_resnet"
    model = cls(backbone=backbone, **small, **data.link())
    trainer = quick_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    assert load_checkpoint(path)["lightning_ssl_method"] == name
    # Resume through the safe CheckpointIO: one more step from the restored state.
    resumed = cls(backbone=backbone, **small, **data.link())
    trainer = quick_trainer(max_steps=2, limit_val_batches=0, plugins=[AtomicCheckpointIO()])
    trainer.fit(resumed, datamodule=data, ckpt_path=path)
    assert trainer.global_step == 2
    # Evaluate and export: the same weights come back.
    loaded = load_pretrained(path)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        loaded.extract_features(images), model.eval().extract_features(images), rtol=0, atol=0
    )
    assert export_backbone(path, tmp_path / "bb")["method"] == name
