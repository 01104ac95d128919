"""What the notebooks share: the repository root, their datasets and their settings switch.

Datasets are read from ``$LIGHTNING_SSL_DATA/<name>`` (CI sets it) or ``<repo>/.cache/data/<name>``;
a missing folder is extracted once from the zips of ``../shared/data/<name>``, as the tests do
(``tests/conftest.py``).

Example:
    >>> from _data import REPO, TINY, dataset_dir
    >>> cifar10 = dataset_dir("cifar10-jpeg")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTNING_SSL_SHARED_DATA", REPO.parent / "shared" / "data"))
DATA = Path(os.environ.get("LIGHTNING_SSL_DATA", REPO / ".cache" / "data"))

#: Seconds-long settings (CI, a laptop) unless ``LIGHTNING_SSL_NOTEBOOK_TINY=0`` (a GPU).
TINY = os.environ.get("LIGHTNING_SSL_NOTEBOOK_TINY", "1") == "1"


def dataset_dir(name: str) -> Path:
    """``DATA/name``, extracted from ``SHARED/name/*.zip`` (with its loose files) if missing.

    Example:
        >>> dataset_dir("imagewoof2-160") / "train"  # doctest: +SKIP
        PosixPath('/work/main/.cache/data/imagewoof2-160/train')
    """
    target = DATA / name
    marker = target / ".extracted"
    if marker.exists() or (target.is_dir() and any(target.iterdir())):
        return target
    source = SHARED / name
    if not source.is_dir():
        raise FileNotFoundError(
            f"no dataset {name}: neither {target} nor {source} exists "
            "(set LIGHTNING_SSL_DATA to a folder holding it)"
        )
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.suffix == ".zip":
            with zipfile.ZipFile(item) as archive:
                archive.extractall(target)
        elif item.is_file():
            shutil.copy(item, target / item.name)
    marker.touch()
    return target


def fresh_dir(path: str | os.PathLike) -> Path:
    """An empty folder at ``path`` (a run of the same name executed before is removed): each
    execution of a notebook starts its runs afresh instead of appending CSV versions."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
