"""The package's shape: the hot path never reaches admin/ or runtime/, and no module imports cycle.

Imports are read from the source (every ``import``, lazy ones inside functions included),
not from a running interpreter, so a branch that rarely runs is checked too.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hook"
HOT_ENTRY = "hook.stage.run"
HOT_FORBIDDEN = ("hook.admin", "hook.runtime")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in its body, TYPE_CHECKING blocks excluded."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def test_the_hot_path_never_imports_admin_or_runtime() -> None:
    edges = graph()
    seen, todo = set(), [HOT_ENTRY]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(edges[name])
    bad = sorted(m for m in seen if m.startswith(HOT_FORBIDDEN))
    assert not bad, f"reachable from {HOT_ENTRY}: {bad}"
    assert "hook.stage.lifecycle" in seen and "hook.host.mounts" in seen  # the walk itself works


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(edges[name]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                walk(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name)


def test_every_declared_dependency_is_imported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    import_names = {"python-hcl2": "hcl2", "structlog": "structlog", "pyroute2": "pyroute2", "pyudev": "pyudev", "docker": "docker", "grpcio": "grpc"}
    declared = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        declared += [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in extra if d.split(">")[0].strip() in import_names]
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                used.add(node.module.split(".")[0])
    unused = [d for d in declared if import_names.get(d, d) not in used]
    assert not unused, f"declared but never imported: {unused}"


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test modules by basename (rootdir mode): two of one name stop collection."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
