"""Shared fixtures: the real datasets of ``../shared/data``, extracted once to a cache folder.

``LIGHTNING_SSL_DATA`` points at an extracted copy (``.ci/run`` sets it); otherwise the zips in
``../shared/data`` are extracted to ``.cache/data`` in the repository (git-ignored).
"""

from __future__ import annotations

import gc
import os
import shutil
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTNING_SSL_SHARED_DATA", REPO.parent / "shared" / "data"))


def _extract(name: str, root: Path) -> Path:
    """Extract ``SHARED/name/*.zip`` into ``root/name`` (once) and copy loose files."""
    target = root / name
    marker = target / ".extracted"
    if marker.exists():
        return target
    source = SHARED / name
    if not source.exists():
        pytest.skip(f"shared data {source} is not available")
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.suffix == ".zip":
            with zipfile.ZipFile(item) as archive:
                archive.extractall(target)
        else:
            shutil.copy(item, target / item.name)
    marker.touch()
    return target


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported and collected (torch, Lightning, every test module: millions of
    objects that live as long as the session) leaves the cyclic collector's sight: its full
    collections during the tests, and the last one at exit, skip them. Objects the tests make
    stay collectable."""
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def decoded_image_cache(tmp_path_factory) -> Path:
    """One cache of decoded JPEG trees for the whole session (CIFAR-10 decodes to 177 MB: a cache
    per test filled CI's disk). Subprocesses inherit it through ``LIGHTNING_SSL_CACHE``."""
    cache = Path(os.environ.get("LIGHTNING_SSL_CACHE") or tmp_path_factory.mktemp("decoded"))
    os.environ["LIGHTNING_SSL_CACHE"] = str(cache)
    return cache


@pytest.fixture(autouse=True)
def no_shared_wandb_service():
    """Tests that log to W&B in this process start a W&B service and export ``WANDB_SERVICE``;
    CLI subprocesses started later would inherit it and share that one service, which still
    holds a run killed mid-test ("run ID ... is in use" on resume). A user's fresh shell has no
    such variable, so each test leaves the process as it found it."""
    yield
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding ``cifar10-jpeg/``, ``fashion-mnist/`` and ``imagewoof2-160/`` extracted."""
    env = os.environ.get("LIGHTNING_SSL_DATA")
    root = Path(env) if env else REPO / ".cache" / "data"
    for name in ("cifar10-jpeg", "fashion-mnist", "imagewoof2-160"):
        _extract(name, root)
    return root


@pytest.fixture(scope="session")
def cifar10_dir(data_root: Path) -> Path:
    return data_root / "cifar10-jpeg"


@pytest.fixture(scope="session")
def fashion_mnist_dir(data_root: Path) -> Path:
    return data_root / "fashion-mnist"


@pytest.fixture(scope="session")
def imagewoof_dir(data_root: Path) -> Path:
    return data_root / "imagewoof2-160"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two on a 2-core machine (no spin-waits).

    Use it per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
