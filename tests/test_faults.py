"""Faults: a crash while a checkpoint is written leaves the previous one readable. (A SIGKILL
mid-epoch resuming from the newest ``last*.ckpt`` is checked by test_fault_injection.py, whose
five kills end with a resume from the newest one.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from lightning_ssl.checkpoint_io import AtomicCheckpointIO
from lightning_ssl.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
TRAIN, BATCH, EPOCHS = 96, 16, 2
STEPS = EPOCHS * TRAIN // BATCH


def _args(data_dir: Path, root: Path) -> list[str]:
    return [
        f"--config={REPO / 'configs/simclr/cifar10.yaml'}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--model.init_args.backbone=timm:test_resnet",
        "--model.init_args.cifar_stem=false",
        "--model.init_args.proj_hidden_dim=64",
        "--model.init_args.proj_dim=32",
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.train_subset={TRAIN}",
        "--data.init_args.val_subset=32",
        f"--data.init_args.batch_size={BATCH}",
        "--data.init_args.num_workers=0",
        f"--trainer.max_epochs={EPOCHS}",
        # A third ModelCheckpoint writing its own last*.ckpt every 2 optimizer steps.
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.save_top_k=0",
    ]


def test_crash_while_writing_keeps_the_previous_last_checkpoint(cifar10_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = run_cli(["fit", *_args(cifar10_dir, tmp_path)[:-4], "--trainer.max_steps=2"])
    trainer = cli.trainer
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # installed by the CLI
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2

    def crash(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", crash)
        with pytest.raises(OSError, match="disk full"):
            trainer.save_checkpoint(last)
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert not list(last.parent.glob("*.tmp"))


def test_a_full_disk_names_the_file_and_the_bytes_and_keeps_the_previous(tmp_path, monkeypatch):
    # A full disk ended in miniz's "unexpected pos", naming no file.
    import errno

    from lightning_ssl import checkpoint_io

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(100)}, path)

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *args):
            self.file.close()

        def write(self, data):
            self.file.write(bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk_open(file_path, mode):
        return FullDisk(open(file_path, mode))

    monkeypatch.setattr(checkpoint_io, "open", full_disk_open, raising=False)
    with pytest.raises(OSError, match=r"no space left on device while writing .*last\.ckpt") as e:
        io.save_checkpoint({"step": 2, "w": torch.ones(1000)}, path)
    assert str(path) in str(e.value) and "bytes needed" in str(e.value) and "intact" in str(e.value)
    assert e.value.errno == errno.ENOSPC
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 256 KiB file system (needs root and ``mount``)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_real_full_disk_keeps_the_previous_checkpoint(small_tmpfs):
    path = small_tmpfs / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(20_000)}, path)  # 80 KB
    with pytest.raises(OSError, match=r"no space left on device while writing .*bytes needed"):
        io.save_checkpoint({"step": 2, "w": torch.ones(50_000)}, path)  # 200 KB: no room
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in small_tmpfs.iterdir()] == ["last.ckpt"]


def test_the_nan_message_names_the_checkpoint_or_says_there_is_none(tmp_path):
    # It claimed "the last checkpoint is intact" when none existed.
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_ssl.callbacks import NonFiniteLossError
    from tests.callbacks.test_guards import NaNAtStep3
    from tests.methods.helpers import SyntheticViews, quick_trainer

    for every in (None, 2):
        data = SyntheticViews(n=64)
        model = NaNAtStep3(
            backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, **data.link()
        )
        folder = tmp_path / str(every)
        ckpt = ModelCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=every)
        trainer = quick_trainer(max_steps=10, callbacks=[ckpt], enable_checkpointing=True)
        with pytest.raises(NonFiniteLossError) as error:
            trainer.fit(model, data)
        if every is None:  # only at epoch end: none yet at step 3
            assert "no checkpoint was written before it" in str(error.value)
        else:
            assert f"the newest checkpoint, {folder / 'last.ckpt'}, was written" in str(error.value)
