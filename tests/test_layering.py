"""Imports flow one way: every module of trigger_ml may import only from its own layer or below.

The layers, bottom to top (``DESIGN.md``):

    core ← data ← models ← train ← ir ← emulate ← firmware ← scoring/trigger/verify/measure
         ← reports ← scan ← demo ← cli

The emulator executes only the IR, so it sits below ``firmware``, whose conversion stage checks the
emulator against the C simulation. The test parses every module with ``ast`` and looks at every
import statement, including the ones inside functions (a function-level import is still a
dependency), so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "trigger_ml"

#: module (dotted, below trigger_ml) or package → layer rank; the longest matching prefix wins
LAYERS: dict[str, int] = {
    "__init__": 0,
    "core": 0,
    "data": 1,
    "models": 2,
    "train": 3,
    "evaluate": 3,
    "onnx_export": 3,
    "ir": 4,
    "emulate": 5,
    "firmware": 6,
    "scoring": 7,
    "importers": 7,
    "trigger": 8,
    "verify": 8,
    "measure": 8,
    "reports": 9,
    "scan": 10,
    "demo": 11,
    "cli": 12,
    "__main__": 13,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _rank(module: str) -> int:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported trigger_ml module below the package) of every import in ``path``."""
    mod = _module_name(path)
    pkg_parts = ["trigger_ml"] + mod.split(".")
    if path.name != "__init__.py":
        pkg_parts = pkg_parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for n in names:
            if n == "trigger_ml":
                continue  # the package itself (its version)
            if n.startswith("trigger_ml."):
                out.append((node.lineno, n[len("trigger_ml."):]))
    return out


MODULES = sorted(PKG.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [str(p.relative_to(PKG)) for p in MODULES if _safe_rank(_module_name(p)) is None]
    assert not missing, f"modules without a layer in tests/test_layering.py LAYERS: {missing}"


def _safe_rank(m: str) -> int | None:
    try:
        return _rank(m)
    except KeyError:
        return None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path: Path):
    mod = _module_name(path)
    me = _rank(mod)
    bad = []
    for line, target in _imports(path):
        r = _safe_rank(target)
        assert r is not None, f"{path.name}:{line} imports unknown trigger_ml module {target}"
        if r > me:
            bad.append(f"{path.relative_to(PKG)}:{line} ({mod}, layer {me}) imports {target} (layer {r})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_package_cycle():
    """No two top-level packages/modules import each other (directly or through others)."""
    graph: dict[str, set[str]] = {}
    for p in MODULES:
        top = _module_name(p).split(".")[0]
        for _, target in _imports(p):
            t = target.split(".")[0]
            if t != top:
                graph.setdefault(top, set()).add(t)

    def reach(a: str) -> set[str]:
        seen, todo = set(), [a]
        while todo:
            for b in graph.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    cycles = sorted(a for a in graph if a in reach(a))
    assert not cycles, f"package-level import cycles through: {cycles}"


def test_core_imports_nothing_above_it():
    for p in (PKG / "core").glob("*.py"):
        for line, target in _imports(p):
            assert target.startswith("core"), f"core/{p.name}:{line} imports {target}"
