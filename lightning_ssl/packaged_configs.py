"""``lightning-ssl configs``: list, locate and copy the shipped configs of an installed package.

The configs live in the repository's ``configs/`` folder and ship inside the package as
``lightning_ssl/configs`` (package data), so that a ``pip install`` without a clone still has them.

Examples:
    ``lightning-ssl configs list simclr`` prints ``simclr/cifar10``, ``simclr/imagenet``, ...;
    ``lightning-ssl fit --config "$(lightning-ssl configs path simclr/cifar10)" ...`` trains with
    one; ``lightning-ssl configs copy simclr/cifar10 my_configs/`` copies it for editing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib.resources import as_file, files
from pathlib import Path


def config_root() -> Path:
    """Folder of the shipped configs (``<package>/configs``)."""
    with as_file(files("lightning_ssl") / "configs") as root:
        return Path(root)


def config_names(prefix: str = "") -> list[str]:
    """Names (``method/dataset``, no ``.yaml``) of the shipped configs starting with ``prefix``.

    Examples:
        >>> "simclr/cifar10" in config_names("simclr")
        True
    """
    root = config_root()
    names = (p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))
    return sorted(n for n in names if n.startswith(prefix))


def config_path(name: str) -> Path:
    """Path of the shipped config ``name`` (``simclr/cifar10`` or ``simclr/cifar10.yaml``).

    Raises:
        FileNotFoundError: no such config; the message lists the close names.
    """
    path = config_root() / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        family = name.split("/")[0]
        near = config_names(family) or config_names()
        raise FileNotFoundError(f"no shipped config {name!r}; there are: {', '.join(near)}")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-ssl configs", description="List, locate or copy the shipped configs."
    )
    commands = parser.add_subparsers(dest="action", required=True)
    listing = commands.add_parser("list", help="print the config names")
    listing.add_argument("prefix", nargs="?", default="", help="e.g. simclr or eval/linear")
    path = commands.add_parser("path", help="print a config's file path")
    path.add_argument("name", help="e.g. simclr/cifar10")
    copy = commands.add_parser("copy", help="copy configs into a folder, keeping their paths")
    copy.add_argument("names", nargs="+", help="config names or prefixes, e.g. simclr dino/cifar10")
    copy.add_argument("destination", help="folder to copy into (created)")
    return parser


def _copy(names: list[str], destination: Path) -> list[Path]:
    chosen = sorted({n for prefix in names for n in config_names(prefix)})
    if not chosen:
        hint = "see `lightning-ssl configs list`"
        raise FileNotFoundError(f"no shipped config matches {names}; {hint}")
    written = []
    for name in chosen:
        target = destination / f"{name}.yaml"
        if target.exists():
            raise FileExistsError(f"{target} exists: copy into an empty folder or remove it first")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config_path(name), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-ssl configs``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.action == "list":
            print("\n".join(config_names(args.prefix)))
        elif args.action == "path":
            print(config_path(args.name))
        else:
            for target in _copy(args.names, Path(args.destination)):
                print(target)
    except (FileNotFoundError, FileExistsError) as error:
        print(f"lightning-ssl configs: {error}", file=sys.stderr)
        return 2
    return 0
