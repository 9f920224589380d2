"""The import direction of the layers: rbl_core <- method libraries <- the robustbench_local harness, no cycles.

Every import counts, including ones inside functions, so a cycle cannot hide in a local import.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rbl_core", "robustbench_local", "attacks", "defenses", "verify")
LIBRARIES = ("attacks", "defenses", "verify")
CORE = "rbl_core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> str:
    if module == CORE or module.startswith(CORE + "."):
        return "core"
    if module.split(".")[0] in LIBRARIES:
        return "library"
    return "harness"


GRAPH = _graph()


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _layer(m) in ("core", "library")))
def test_lower_layers_never_import_upward(module: str) -> None:
    allowed = {"core": {"core"}, "library": {"core", "library"}}[_layer(module)]
    upward = sorted(m for m in GRAPH[module] if _layer(m) not in allowed)
    assert not upward, f"{module} ({_layer(module)}) imports {upward} from a layer above it"


def test_package_root_imports_nothing() -> None:
    # Importing one harness module must not drag the rest of the harness in through the package __init__; the
    # core it imports first pins the CPU kernels (rbl_core/reproducibility.py) and sits below it.
    assert GRAPH["robustbench_local"] <= {CORE}


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_graph_sees_the_layers() -> None:
    # Guards the test itself: an empty or unparsed graph would pass the checks above vacuously.
    assert _layer("rbl_core.threat") == "core" and _layer("robustbench_local.cli") == "harness"
    assert "rbl_core.threat" in GRAPH["attacks.base"]
    assert "attacks.base" in GRAPH["robustbench_local.evaluation"]
    assert len([m for m in GRAPH if _layer(m) == "library"]) > 30
