"""The README's export commands and loading snippets run as written and give the features the
method evaluates (checkpoints made here at the paths the README names)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from lightning_ssl.commands import main
from lightning_ssl.eval.pretrained import load_pretrained
from lightning_ssl.methods import SimCLR
from tests.test_export import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).parents[1] / "README.md"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_export_and_loading_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoints = {  # in the order of the README's loading snippets
        "runs/byol-imagenet/checkpoints/last.ckpt": {"backbone": "resnet50"},
        "runs/simclr-cifar10/checkpoints/last.ckpt": {"backbone": "resnet18", "cifar_stem": True},
    }
    for path, backbone in checkpoints.items():
        Path(path).parent.mkdir(parents=True)
        pretrain(SimCLR, Path(path), **backbone)
    section = readme_section("Offline evaluation and export")
    commands = [line for line in section.splitlines() if line.startswith("lightning-ssl export")]
    assert len(commands) == 3
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main(shlex.split(command)[1:])
        assert exit_info.value.code == 0
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    images = torch.randn(2, 3, 32, 32)
    for snippet, checkpoint in zip(snippets, checkpoints, strict=True):
        namespace: dict = {}
        exec(snippet, namespace)  # the README's code, verbatim
        with torch.no_grad():
            expected = load_pretrained(checkpoint).extract_features(images)
            torch.testing.assert_close(namespace["m"].eval()(images), expected)
