"""The package's layers, read from its imports: no import cycle, and every import points down the layer order.

docs/architecture.md draws the same order. Every import counts, also those inside functions (segvol imports heavy
modules lazily) and those only for type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "segvol"

# bottom to top; a unit is a top-level module or sub-package of segvol
LAYERS: list[set[str]] = [
    {"segvol", "errors", "config", "utils", "distributed"},  # the ground
    {"io", "viz", "labels", "checkpoint"},  # shared by every stage
    {"data", "transforms", "networks"},  # datasets, MONAI transforms, networks
    {"plan", "tree", "mesh"},  # from data and masks: plans, artery trees, surfaces
    {"inference"},  # predictor, backends, writers, batch
    {"training"},  # fit loop, caches, runs (validation uses inference's sliding window)
    {"evaluation"},  # metrics, reports (evaluating a run predicts it)
    {"api"},  # the typed facade
    {"cli", "app", "bench", "bench_cascade", "__main__"},  # entry points: nothing below imports these
]
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The segvol modules ``name`` imports anywhere in its file (a ``from pkg import mod`` names ``pkg.mod``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & set(modules)
            out |= subs or ({target} & set(modules))
    return out - {name}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "segvol"


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"segvol.{unit} is in no layer: add it to LAYERS here and to docs/architecture.md")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_every_unit_has_a_layer():
    for module in _modules():
        _layer(_unit(module))


def test_no_module_imports_another_in_a_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_two_units_import_each_other():
    units: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        units.setdefault(_unit(module), set()).update(_unit(t) for t in targets if _unit(t) != _unit(module))
    cycle = _cycle(units)
    assert cycle is None, "sub-packages in a loop: " + " -> ".join(f"segvol.{u}" for u in cycle or [])


def test_every_import_points_down_the_layers():
    upward = sorted(f"{module} imports {target}" for module, targets in _graph().items() for target in targets
                    if _layer(_unit(target)) > _layer(_unit(module)))
    assert not upward, "imports that point up the layer order:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_source_files_stay_short(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path}: {lines} lines (split it by step; at most {MAX_LINES})"


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The checks above can fail: a two-module loop is a cycle, and io importing data points up."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert _layer(_unit("segvol.data.brats")) > _layer(_unit("segvol.io.nifti"))
