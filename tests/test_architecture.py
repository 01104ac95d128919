"""The package keeps the shape ARCHITECTURE.md describes: layers, no import cycle, small pieces.

The layer table is read from ARCHITECTURE.md itself, so the page and the code cannot drift: a
module that imports a layer above its own, a module no layer claims, an import cycle, a module
over 400 lines or a function over 60 lines fails here with the names to fix. Imports are read
with ``ast`` from the source (those inside functions included), nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lightning_ssl"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: Files exempt from the size rules (none: every module is under the limits).
SIZE_EXEMPT: set[str] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imports(name: str) -> set[str]:
    """The package's modules ``name`` imports, at any depth (functions and classes included)."""
    found: set[str] = set()
    is_package = MODULES[name].name == "__init__.py"
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            # ``from pkg import module`` imports the module; ``from module import name`` not.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layer_table() -> list[tuple[str, list[str]]]:
    """``(layer, module prefixes)`` from the table of ARCHITECTURE.md's Layers, lowest first."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            names = re.findall(r"`([\w.]+)`", cells[2])
            prefixes = [f"lightning_ssl.{n}" if n != "lightning_ssl" else n for n in names]
            rows.append((int(cells[0]), cells[1], prefixes))
    assert rows, "ARCHITECTURE.md: no layer table under '## Layers'"
    return [(layer, prefixes) for _, layer, prefixes in sorted(rows)]


LAYERS = _layer_table()


def _level(module: str) -> int:
    """Index of the layer that claims ``module`` (the longest matching prefix wins; the root
    package ``lightning_ssl`` claims only its own ``__init__``)."""
    best, level = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            child = prefix != "lightning_ssl" and module.startswith(prefix + ".")
            if (module == prefix or child) and len(prefix) > best:
                best, level = len(prefix), index
    return level


def test_every_module_belongs_to_a_layer_of_architecture_md():
    unclaimed = [m for m in MODULES if _level(m) < 0]
    assert not unclaimed, f"add these modules to the layer table of ARCHITECTURE.md: {unclaimed}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} ({LAYERS[_level(module)][0]}) imports {target} ({LAYERS[_level(target)][0]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if _level(target) > _level(module)
    ]
    assert not upward, "imports against the layers of ARCHITECTURE.md:\n" + "\n".join(upward)


def test_dataset_files_are_leaves_of_data():
    """A dataset file builds on the DataModule base and only ``lightning_ssl.data`` exports it:
    nothing imports a dataset file, so adding one touches nothing else (ARCHITECTURE.md)."""
    base, package = "lightning_ssl.data.datamodule", "lightning_ssl.data"
    datasets = [m for m, targets in GRAPH.items() if base in targets and m != package]
    assert "lightning_ssl.data.cifar" in datasets
    importers = {
        f"{m} imports {d}"
        for d in datasets
        for m, targets in GRAPH.items()
        if d in targets and m != package
    }
    assert not importers, f"dataset files must stay leaves: {sorted(importers)}"


def _cycle() -> list[str] | None:
    """One import cycle between the package's modules, or ``None`` (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_see_function_level_imports_and_planted_cycles(monkeypatch):
    """The checks themselves: ``commands`` imports the CLI inside ``main`` (to start light), and
    a planted two-module cycle is reported."""
    assert "lightning_ssl.cli" in GRAPH["lightning_ssl.commands"]
    monkeypatch.setitem(GRAPH, "lightning_ssl.optim", {*GRAPH["lightning_ssl.optim"], "x"})
    monkeypatch.setitem(GRAPH, "x", {"lightning_ssl.optim"})
    assert _cycle() == ["lightning_ssl.optim", "x", "lightning_ssl.optim"]


def _relative(module: str) -> str:
    return MODULES[module].relative_to(REPO).as_posix()


def test_no_module_over_400_lines():
    long = {
        _relative(m): n
        for m, p in MODULES.items()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
        and _relative(m) not in SIZE_EXEMPT
    }
    assert not long, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def test_no_function_over_60_lines():
    long = [
        f"{_relative(m)}:{name} ({lines} lines)"
        for m, tree in TREES.items()
        if _relative(m) not in SIZE_EXEMPT
        for name, lines in _functions(tree)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, f"split these functions (over {MAX_FUNCTION_LINES} lines): {long}"
