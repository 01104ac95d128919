"""Dataset readers on small files written by the tests (image modes, errors, IDX, STL-10, cache)."""

from __future__ import annotations

import gzip
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from lightning_ssl.data import CIFAR10DataModule, ImageFolderDataModule, STL10DataModule
from lightning_ssl.data.datasets import (
    ImageFolderDataset,
    load_image,
    pil_to_rgb,
    scan_image_folder,
)
from lightning_ssl.data.readers import read_idx, read_image_folder


def _rgb(seed: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _tree(root: Path, classes: dict[str, int], ext: str = "png") -> Path:
    """``root/<class>/<i>.<ext>`` with ``classes[name]`` random RGB images each."""
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            _rgb(10 * c + i).save(root / name / f"{i}.{ext}")
    return root


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGBA", (5, 4), (10, 20, 30, 0)),
        Image.new("LA", (5, 4), (10, 0)),
        Image.new("L", (5, 4), 10),
        Image.new("CMYK", (5, 4), (0, 0, 0, 0)),
        Image.new("P", (5, 4), 3),
        Image.new("1", (5, 4), 1),
        Image.new("I;16", (5, 4), 2570),
        Image.new("I", (5, 4), 2570),
        Image.new("F", (5, 4), 10.0),
    ],
    ids=lambda image: image.mode,
)
def test_pil_to_rgb_handles_every_mode(image):
    rgb = pil_to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (5, 4)
    if image.mode in ("RGBA", "L", "LA", "I;16", "I", "F"):
        assert rgb.getpixel((0, 0))[0] == 10  # 16-bit 2570 = 10 * 257 scaled, not clipped


def test_images_of_any_mode_load_as_rgb(tmp_path):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    Image.new("RGBA", (8, 6), (1, 2, 3, 4)).save(folder / "rgba.png")
    Image.new("L", (8, 6), 5).save(folder / "grey.png")
    Image.new("CMYK", (8, 6), (0, 50, 100, 0)).save(folder / "cmyk.jpg")
    Image.new("P", (8, 6), 1).save(folder / "palette.png", transparency=0)
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(folder / "deep.png")
    assert Image.open(folder / "deep.png").mode.startswith("I")
    dataset = ImageFolderDataset(tmp_path / "train")
    for i in range(len(dataset)):
        image, _ = dataset[i]
        assert image.mode == "RGB" and image.size == (8, 6)
    deep = dict(zip([Path(p).name for p, _ in dataset.samples], range(5), strict=True))["deep.png"]
    assert dataset[deep][0].getpixel((0, 0)) == (255, 255, 255)


def test_scan_matches_torchvision_image_folder(tmp_path):
    root = _tree(tmp_path / "train", {"b": 2, "a": 3, "c": 1})
    (root / "a" / "nested").mkdir()
    _rgb(99).save(root / "a" / "nested" / "x.jpg")
    (root / "a" / "notes.txt").write_text("not an image")
    classes, samples = scan_image_folder(root)
    reference = torchvision.datasets.ImageFolder(str(root))
    assert classes == reference.classes == ["a", "b", "c"]
    assert samples == reference.samples


def test_empty_class_folder_is_named(tmp_path):
    root = _tree(tmp_path / "train", {"cat": 2})
    (root / "dog").mkdir()
    with pytest.raises(FileNotFoundError, match=r"class folder .*dog is empty"):
        scan_image_folder(root)


def test_corrupt_jpeg_error_names_the_file(tmp_path):
    root = _tree(tmp_path / "train", {"a": 2}, ext="jpg")
    _tree(tmp_path / "val", {"a": 1}, ext="jpg")
    broken = root / "a" / "1.jpg"
    _rgb(0, (64, 64)).save(broken, quality=95)
    broken.write_bytes(broken.read_bytes()[:300])  # truncated
    with pytest.raises(RuntimeError, match=str(broken)):
        load_image(broken)
    dm = ImageFolderDataModule(str(tmp_path), batch_size=1, num_workers=0, image_size=32)
    dataset = dm.dataset("train")
    dataset[0]
    with pytest.raises(RuntimeError, match=r"cannot read image file .*1\.jpg"):
        dataset[1]
    with pytest.raises(RuntimeError, match=r"1\.jpg"):  # the in-memory decoder names it too
        read_image_folder(root, tmp_path / "cache")


def test_image_folder_cache_hits_and_invalidates(tmp_path):
    root = _tree(tmp_path / "data" / "train", {"a": 3, "b": 2})
    before = sorted(p for p in (tmp_path / "data").rglob("*"))
    images, labels, classes = read_image_folder(root, tmp_path / "cache")
    assert images.shape == (5, 3, 10, 12) and labels.tolist() == [0, 0, 0, 1, 1]
    assert classes == ["a", "b"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert sorted(p for p in (tmp_path / "data").rglob("*")) == before  # nothing written there
    reference = torch.from_numpy(np.asarray(Image.open(root / "b" / "1.png"))).permute(2, 0, 1)
    assert torch.equal(images[4], reference)
    again, _, _ = read_image_folder(root, tmp_path / "cache")
    assert torch.equal(again, images)
    _rgb(7).save(root / "b" / "2.png")
    assert len(read_image_folder(root, tmp_path / "cache")[0]) == 6


def test_image_folder_of_mixed_sizes_is_rejected_in_memory(tmp_path):
    root = _tree(tmp_path / "train", {"a": 2})
    _rgb(5, (20, 20)).save(root / "a" / "big.png")
    with pytest.raises(ValueError, match=r"big\.png has shape \(3, 20, 20\)"):
        read_image_folder(root, tmp_path / "cache")


def test_read_idx_gzip_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (tmp_path / "x-idx3-ubyte").write_bytes(header + array.tobytes())
    with gzip.open(tmp_path / "x-idx3-ubyte.gz", "wb") as f:
        f.write(header + array.tobytes())
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        assert np.array_equal(read_idx(tmp_path / name), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def _write_stl10(folder: Path, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """Tiny STL-10 binaries: each image stored column-major as (3, W, H), labels 1..10."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, n in counts.items():
        chw = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(chw.transpose(0, 1, 3, 2).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8))
        images[split] = chw
    return images


def test_stl10_fake_binaries(tmp_path):
    images = _write_stl10(tmp_path / "stl10_binary", {"train": 6, "test": 4, "unlabeled": 5})
    dm = STL10DataModule(str(tmp_path), batch_size=4, num_workers=0, augmentation="byol")
    assert (dm.num_classes, dm.image_size, dm.num_global_crops) == (10, 96, 2)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.dataset("train")) == 11
    assert len(dm.dataset("train_eval")) == 6 and len(dm.dataset("val")) == 4
    labelled_only = STL10DataModule(str(tmp_path), unlabeled=False)
    assert len(labelled_only.dataset("train")) == 6
    pretrain = dm.dataset("train")
    labels = [pretrain[i][1] for i in range(11)]
    assert labels == [0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1]  # file labels 1..10; unlabelled -1
    eval_images = dm.dataset("train_eval").images
    assert torch.equal(eval_images, torch.from_numpy(images["train"]))  # orientation kept
    (views, batch_labels) = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(4, 3, 96, 96)] * 2
    assert batch_labels.dtype == torch.int64


def test_stl10_missing_files_say_how_to_get_them(tmp_path):
    dm = STL10DataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere.*download=True"):
        dm.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"stl10_binary.*download=True"):
        STL10DataModule(str(tmp_path)).setup()


def test_cifar_pickles_torchvision_layout(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        batches[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0, 3, 9, 1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    dm = CIFAR10DataModule(str(tmp_path), batch_size=2, num_workers=0)
    assert len(dm.dataset("train")) == 20 and len(dm.dataset("val")) == 4
    first = dm.dataset("train_eval").images[0]
    assert torch.equal(first, torch.from_numpy(batches["data_batch_1"][0]).view(3, 32, 32))
    views, labels = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(2, 3, 32, 32)] * 2 and labels.shape == (2,)


def test_cache_load_is_fast(tmp_path):
    root = tmp_path / "train" / "a"
    root.mkdir(parents=True)
    for i in range(200):
        _rgb(i, (32, 32)).save(root / f"{i}.png")
    read_image_folder(tmp_path / "train", tmp_path / "cache")
    start = time.perf_counter()
    read_image_folder(tmp_path / "train", tmp_path / "cache")
    assert time.perf_counter() - start < 1.0
