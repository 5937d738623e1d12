"""gRPC stays off the hook's hot path: the stages never reach hook.kubernetes, and what they may use is pure."""

from __future__ import annotations

import ast

from tests.unit.test_layout import HOT_ENTRY, PACKAGE, graph


def reachable(start: str) -> set[str]:
    edges = graph()
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    return seen


def test_stages_never_import_the_kubernetes_package() -> None:
    bad = sorted(m for m in reachable(HOT_ENTRY) if m.startswith("hook.kubernetes"))
    assert not bad, f"reachable from {HOT_ENTRY}: {bad}"


def test_kubelet_spec_reading_is_pure() -> None:
    """hook.request.kubernetes (which the stages may use) reaches no gRPC, switch or admin module, and does no I/O itself."""
    modules = reachable("hook.request.kubernetes")
    assert not [m for m in modules if m.startswith(("hook.kubernetes", "hook.switch", "hook.admin", "hook.runtime"))]
    tree = ast.parse((PACKAGE / "request" / "kubernetes.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"grpc", "google", "subprocess", "socket"}
