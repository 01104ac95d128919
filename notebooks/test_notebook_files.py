"""The committed notebooks: each ``.ipynb`` holds exactly its paired ``.py`` source, without
outputs, and the folder stays small. (Their execution is nbmake's job: ``pytest`` runs them.)"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == [
        "01_quickstart",
        "02_compare_runs",
        "03_embeddings",
        "04_dino_attention",
        "05_mae_reconstructions",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_is_its_py_source_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    source = jupytext.read(path.with_suffix(".py"))
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    cells = [(cell.cell_type, cell.source) for cell in notebook.cells]
    assert cells == [(cell.cell_type, cell.source) for cell in source.cells]
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_folder_is_small():
    tracked = [p for p in HERE.iterdir() if p.is_file() and p.suffix in {".py", ".ipynb", ".md"}]
    assert sum(p.stat().st_size for p in tracked) < 300_000
