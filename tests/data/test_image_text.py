"""ImageTextDataModule reads webdataset-style shards, a CSV/TSV table and class-name captions
built here; bad inputs fail with one message naming the file and the fix."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightning_ssl.data import ImageTextDataModule
from lightning_ssl.data.pairs import read_caption_table, scan_shards
from lightning_ssl.data.tokenizer import CAPTION_TEMPLATES, fill_templates, tokenize

pytest.importorskip("open_clip")
CONTEXT = 16


def _jpeg(colour: tuple[int, int, int], size: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size + 4), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _val_tree(root: Path) -> None:
    for name, colour in (("red_square", (250, 0, 0)), ("blue", (0, 0, 250))):
        (root / "val" / name).mkdir(parents=True)
        Image.new("RGB", (24, 24), colour).save(root / "val" / name / "0.png")


def _datamodule(root: Path, train: str, **kwargs) -> ImageTextDataModule:
    return ImageTextDataModule(
        str(root), train=train, image_size=16, batch_size=2, num_workers=0,
        context_length=CONTEXT, **kwargs,
    )  # fmt: skip


def _batch(dm: ImageTextDataModule):
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_shards_pair_images_with_captions_by_key(tmp_path):
    (tmp_path / "shards").mkdir()
    captions = {}
    for shard in range(2):
        with tarfile.open(tmp_path / "shards" / f"{shard:05d}.tar", "w") as tar:
            for i in range(3):
                key = f"{shard}{i:04d}"
                captions[key] = f"a red thing number {shard} {i}"
                _add(tar, f"{key}.jpg", _jpeg((200, 10 * i, 0)))
                _add(tar, f"{key}.txt", captions[key].encode())
                _add(tar, f"{key}.json", b"{}")  # other members are ignored
            _add(tar, "orphan.jpg", _jpeg((0, 0, 0)))  # no caption: not a pair
    pairs = scan_shards(tmp_path / "shards")
    assert sorted(p.caption for p in pairs) == sorted(captions.values())
    _val_tree(tmp_path)
    dm = _datamodule(tmp_path, "shards")
    assert dm.num_classes == 2 and dm.class_names == ["blue", "red square"]
    views, labels, tokens = _batch(dm)
    assert [tuple(v.shape) for v in views] == [(2, 3, 16, 16)]
    assert labels.tolist() == [-1, -1] and tokens.shape == (2, CONTEXT)
    # Every batch row's tokens are those of one of the shards' captions.
    expected = tokenize(list(captions.values()), CONTEXT)
    assert all((expected == row).all(dim=1).any() for row in tokens)
    images, val_labels = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 16, 16) and val_labels.tolist() == [0, 1]


def test_csv_and_tsv_tables(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(_jpeg((60 * i, 0, 0)))
    (tmp_path / "pairs.csv").write_text(
        "filepath,title\n" + "".join(f'img/{i}.jpg,"a photo, number {i}"\n' for i in range(4))
    )
    (tmp_path / "pairs.tsv").write_text("".join(f"img/{i}.jpg\tphoto {i}\n" for i in range(4)))
    csv_pairs, tsv_pairs = (read_caption_table(tmp_path / f) for f in ("pairs.csv", "pairs.tsv"))
    assert [p.caption for p in csv_pairs] == [f"a photo, number {i}" for i in range(4)]
    assert [Path(p.path).name for p in tsv_pairs] == [f"{i}.jpg" for i in range(4)]
    _val_tree(tmp_path)
    views, labels, tokens = _batch(_datamodule(tmp_path, "pairs.tsv"))
    assert views[0].shape == (2, 3, 16, 16) and tokens.shape == (2, CONTEXT)
    assert labels.tolist() == [-1, -1]


def test_class_name_captions_of_cifar10(cifar10_dir):
    dm = ImageTextDataModule(
        str(cifar10_dir), val_dir="test", image_size=32, batch_size=4, num_workers=0,
        context_length=CONTEXT, train_subset=40,
    )  # fmt: skip
    assert dm.num_classes == 10 and dm.class_names[0] == "airplane"
    pairs = dm.training_pairs()
    names = dm.class_names
    templates = {t.format(names[p.label]) for t in CAPTION_TEMPLATES for p in pairs[:50]}
    assert all(p.caption in templates for p in pairs[:50])
    assert len({p.caption for p in pairs[:50]}) > 1  # templates vary across images
    views, labels, tokens = _batch(dm)
    assert views[0].shape == (4, 3, 32, 32) and labels.min() >= 0
    captions = tokenize(fill_templates(CAPTION_TEMPLATES, names), CONTEXT)
    assert all((captions == row).all(dim=1).any() for row in tokens)


def test_imagewoof_captions_use_breed_names(imagewoof_dir):
    dm = ImageTextDataModule(
        str(imagewoof_dir), class_names="classes.tsv", image_size=64, num_workers=0,
        context_length=CONTEXT,
    )  # fmt: skip
    assert "beagle" in dm.class_names and len(dm.class_names) == 10
    assert any("Shih-Tzu" in p.caption for p in dm.training_pairs())


def test_bad_inputs_fail_with_a_clear_message(tmp_path):
    _val_tree(tmp_path)
    (tmp_path / "bad.csv").write_text("a.jpg,one,two\n")
    with pytest.raises(ValueError, match="row 1: expected 2 columns"):
        _batch(_datamodule(tmp_path, "bad.csv"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ValueError, match=r"cannot read shard .*0\.tar"):
        _batch(_datamodule(tmp_path, "broken"))
    (tmp_path / "corrupt").mkdir()
    with tarfile.open(tmp_path / "corrupt" / "0.tar", "w") as tar:
        for i in range(2):
            _add(tar, f"{i}.jpg", b"\xff\xd8 not a jpeg")
            _add(tar, f"{i}.txt", b"caption")
    with pytest.raises(RuntimeError, match=r"cannot read image .*0\.tar"):
        _batch(_datamodule(tmp_path, "corrupt"))
    (tmp_path / "huge").mkdir()
    with tarfile.open(tmp_path / "huge" / "0.tar", "w") as tar:
        for i in range(2):
            _add(tar, f"{i}.jpg", _jpeg((1, 2, 3), size=200))
            _add(tar, f"{i}.txt", b"caption")
    with pytest.raises(ValueError, match="max_image_pixels"):
        _batch(_datamodule(tmp_path, "huge", max_image_pixels=1000))
    with pytest.raises(FileNotFoundError, match=r"training pairs .*missing"):
        _batch(_datamodule(tmp_path, "missing"))
    with pytest.raises(ValueError, match="batched_augmentation"):
        _datamodule(tmp_path, "huge", batched_augmentation=True)
    assert torch.is_tensor(tokenize(["x"], 3))
