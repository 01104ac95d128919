"""The package declares what it imports, ships its licence and type marker, and has one version."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

import lightning_ssl

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: Import names of optional packages that may not be installed here, with their distribution.
NOT_INSTALLED_HERE = {"umap": "umap-learn", "sklearn": "scikit-learn"}


def _imported_top_level_modules() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "lightning_ssl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"lightning_ssl", "__future__"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_third_party_module_is_declared():
    project = PYPROJECT["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        declared |= {_requirement_name(r) for r in extra}
    providers = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        fallback = [NOT_INSTALLED_HERE.get(module, module)]
        dists = {d.lower().replace("_", "-") for d in providers.get(module, fallback)}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_one_version_source():
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "lightning_ssl.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", lightning_ssl.__version__)


def test_licence_and_type_marker_ship():
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert (REPO / "lightning_ssl" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["lightning_ssl"]


def _build_wheel(out: Path) -> Path:
    """A real (non-editable) wheel of the checkout, as ``pip install .`` would build it."""
    import setuptools

    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)]
    if int(setuptools.__version__.split(".")[0]) >= 77:  # the build requirement: no download
        command.append("--no-build-isolation")
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("lightning_ssl-*.whl")
    return wheel


def test_installed_wheel_ships_every_config_and_lists_them(tmp_path):
    """A non-editable install has the configs: ``lightning-ssl configs`` finds each shipped one."""
    wheel = _build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
        names = set(archive.namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped and {f"lightning_ssl/{p}" for p in shipped} <= names
    assert "lightning_ssl/py.typed" in names
    listing = subprocess.run(
        [sys.executable, "-m", "lightning_ssl", "configs", "list"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120,
    )
    assert sorted(listing.stdout.split()) == sorted(p.removesuffix(".yaml")[8:] for p in shipped)


def test_configs_command_copies_and_names_missing_configs(tmp_path):
    from lightning_ssl.packaged_configs import config_path, main

    assert main(["copy", "simclr", str(tmp_path)]) == 0
    copied = tmp_path / "simclr" / "cifar10.yaml"
    assert copied.read_bytes() == config_path("simclr/cifar10").read_bytes()
    assert main(["copy", "simclr/cifar10", str(tmp_path)]) == 2  # never overwrites
    assert main(["path", "simclr/cifar1"]) == 2
