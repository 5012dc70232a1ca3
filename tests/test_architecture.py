"""The layout's rules (docs/architecture.md), checked on the source: size, cycles, privacy, layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "acestep_app"
MAX_ROOT_MODULES = 8
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def family_packages() -> set[str]:
    return {module_name(path.parent / "__init__.py") for path in PACKAGE.glob("*/family.py")}


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import of ``name`` outside ``if TYPE_CHECKING``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if is_type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                found.append((base, [alias.name for alias in child.names]))
            stack.append(child)
    return found


def edges(name: str) -> set[str]:
    """The package modules ``name`` imports (a submodule named in ``from pkg import sub`` counts as itself)."""
    targets = set()
    for module, names in imports_of(name):
        if not module.startswith("acestep_app"):
            continue
        submodules = [f"{module}.{item}" for item in names if f"{module}.{item}" in MODULES]
        targets.update(submodules or [module])
    return {target for target in targets if target in MODULES and target != name}


def test_the_package_root_holds_few_modules():
    root_modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_line_limit(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines"


def test_there_are_no_import_cycles():
    graph = {name: edges(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target] if target in path else [node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name in MODULES:
        for module, names in imports_of(name):
            if module.startswith("acestep_app") and module != name:
                offences += [f"{name}: from {module} import {item}" for item in names
                             if item.startswith("_") and not item.startswith("__")]
    assert not offences, offences


def test_tests_use_public_names_only():
    offences = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("acestep_app"):
                offences += [f"{path.name}: {alias.name}" for alias in node.names
                             if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offences, offences


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("acestep_app.serving", ("acestep_app.hosts", "acestep_app.cli", "FAMILIES")),
    ("acestep_app.engine", ("acestep_app.hosts", "acestep_app.cli", "FAMILIES")),
    ("FAMILIES", ("acestep_app.hosts", "acestep_app.cli")),
])
def test_layers_import_downwards_only(layer, forbidden):
    families = family_packages()
    assert "acestep_app.acestep_v1" in families
    sources = sorted(families) if layer == "FAMILIES" else [layer]
    targets = [prefix for item in forbidden for prefix in (sorted(families) if item == "FAMILIES" else [item])]
    offences = []
    for name in MODULES:
        if not any(name == source or name.startswith(source + ".") for source in sources):
            continue
        for target in edges(name):
            owner = next((source for source in sources if name == source or name.startswith(source + ".")), None)
            if any(target == prefix or target.startswith(prefix + ".") for prefix in targets if prefix != owner):
                offences.append(f"{name} -> {target}")
    assert not offences, offences
