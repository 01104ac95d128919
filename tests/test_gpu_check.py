"""benchmarks/gpu_check.py --smoke: every part of the GPU check runs at tiny sizes on the CPU and
reports figures, so that the one command a GPU session runs first cannot rot.

The check runs as the device machine runs it: from the shared CIFAR-10 zips, in a process where
``wandb`` and ``jsonargparse`` cannot be imported (the GPU machine has neither)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
WITHOUT = "import sys, runpy; sys.modules.update(wandb=None, jsonargparse=None); "
RUN = "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"

FIGURES = {
    "augment": ("views_per_s", "images_per_s"),
    "train_step": ("images_per_s", "ms_per_step"),
    "loss_memory": ("peak_mib", "fwd_bwd_ms"),
    "simclr": ("train_images_per_s", "projected_200_epochs_min"),
}


def test_smoke_runs_every_part_and_reports_figures(tmp_path, data_root):
    out = tmp_path / "check"
    script = str(REPO / "benchmarks" / "gpu_check.py")
    cmd = [sys.executable, "-c", WITHOUT + RUN, script, "--smoke", "--out", str(out),
           "--work", str(tmp_path / "work"), "--cifar10", str(SHARED / "cifar10-jpeg")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["torch"] and report["environment"]["device"]
    assert report["data"]["status"] == "ok", report["data"]
    for part, keys in FIGURES.items():
        assert report[part]["status"] == "ok", (part, report[part], proc.stderr[-3000:])
        rows = report[part]["rows"]
        assert rows, part
        for row in rows:
            for key in keys:
                assert isinstance(row[key], int | float) and row[key] >= 0, (part, row)
            # speeds and times are positive (peak memory may read 0 for small CPU runs)
            assert row[keys[0 if part != "loss_memory" else 1]] > 0, (part, row)
    assert report["simclr"]["rows"][0]["epochs_run"] == 2
    markdown = (out / "gpu_check.md").read_text()
    assert "5/5 parts ok" in markdown
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md"]
