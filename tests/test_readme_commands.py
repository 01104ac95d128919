"""Every ``lightning-ssl`` command of the README runs as written, in the README's order and in one
folder (a resume finds the run the line before made), with tiny settings appended and the data
placeholders pointed at the test data. Only the multi-GPU line is left out: it asks for 8 GPUs.

They run through the console script's ``main`` in this process (what ``lightning-ssl`` runs, less
the 5-10 s of imports each fresh process paid); a fresh ``lightning-ssl`` process is the subject
of tests/test_packaging.py and tests/test_multiprocess_cli.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.cli_run import lightning_ssl_in_process

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDERS = ("path/to/cifar10", "<cifar10-jpeg>", "DIR")
TINY = [
    "--trainer.accelerator=cpu",
    "--trainer.precision=32",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--data.init_args.batch_size=8",
    "--data.init_args.num_workers=0",
    "--data.init_args.train_subset=64",
    "--data.init_args.val_subset=32",
]


def readme_commands() -> list[str]:
    """The ``lightning-ssl`` lines of the README's bash blocks, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("lightning-ssl "):
                commands.append(line)
    return commands


def needs_gpus(command: str) -> bool:
    return "--trainer.devices 8" in command


COMMANDS = [c for c in readme_commands() if not needs_gpus(c)]


def test_the_readme_shows_every_workflow_command():
    subcommands = [shlex.split(c)[1] for c in COMMANDS]
    assert {"fit", "validate", "compare", "grid", "export"} <= set(subcommands)
    assert sum(map(needs_gpus, readme_commands())) == 1
    assert any("--ckpt_path last" in c and c.split()[1] == "fit" for c in COMMANDS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder standing for the repository root (the README's commands name configs/...)."""
    workdir = tmp_path_factory.mktemp("readme")
    (workdir / "configs").symlink_to(REPO / "configs")
    return workdir


def as_run(command: str, data_dir: Path) -> list[str]:
    for placeholder in PLACEHOLDERS:
        command = command.replace(placeholder, str(data_dir))
    argv = shlex.split(command)[1:]
    if argv[0] in ("fit", "validate", "test"):
        argv += TINY
    return argv


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=lambda i: COMMANDS[i][14:60])
def test_readme_command_runs_as_written(index, workdir, cifar10_dir):
    command = COMMANDS[index]
    result = lightning_ssl_in_process(*as_run(command, cifar10_dir), cwd=workdir)
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
