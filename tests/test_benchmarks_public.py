"""Benchmarks and examples are clients of polyprune's public API, and benchmarks stand alone.

- No module under ``benchmarks/`` or ``examples/`` reaches a private part of polyprune: no
  ``polyprune._x`` or ``polyprune.x._y`` import, no ``from polyprune... import _x``, no private
  attribute of an imported polyprune name (``pp._x``, ``zoo._y``), no such module path in a
  string (``importlib.import_module("polyprune._x")``).
- Benchmarks never import the tests (tests import benchmarks as ordinary packages).
- The single-file benchmarks run both as ``python benchmarks/X.py`` and ``python -m
  benchmarks.X``: no relative import, no import of their own package, a ``__main__`` guard.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("examples/**/*.py")])
SCRIPTS = sorted(p for p in ROOT.glob("benchmarks/*.py") if p.name != "__init__.py")

#: Known private imports, each to be removed with its entry once polyprune makes the name
#: public (the test fails if an entry is no longer needed).
KNOWN: dict[str, set[str]] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> set[str]:
    """Every private part of polyprune that ``source`` imports or touches, as dotted names."""
    tree = ast.parse(source)
    found: set[str] = set()
    bound: dict[str, str] = {}  # local name -> the polyprune path it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "polyprune":
                    if any(map(_private, alias.name.split("."))):
                        found.add(alias.name)
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else "polyprune"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "polyprune":
                continue
            if any(map(_private, node.module.split("."))):
                found.add(node.module)
            for alias in node.names:
                path = f"{node.module}.{alias.name}"
                if _private(alias.name):
                    found.add(path)
                bound[alias.asname or alias.name] = path
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"polyprune(\.\w+)*", node.value)
            and any(map(_private, node.value.split(".")))
        ):
            found.add(node.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = [node.attr]
            root: ast.expr = node.value
            while isinstance(root, ast.Attribute):
                chain.insert(0, root.attr)
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound and any(map(_private, chain)):
                found.add(".".join([bound[root.id], *chain]))
    return found


def test_the_scanner_finds_every_kind_of_private_use():
    source = """
import polyprune as pp
import polyprune._graph
from polyprune import _demo, zoo
from polyprune.zoo import _training as t
from polyprune.scoring._base import BaseScorer
import importlib
importlib.import_module("polyprune._cs")
pp.zoo._render.draw
zoo._models
pp.Masks.effective, pp.__version__, x._y, "polyprune"
"""
    assert private_uses(source) == {
        "polyprune._graph", "polyprune._demo", "polyprune.zoo._training",
        "polyprune.scoring._base", "polyprune._cs", "polyprune.zoo._render.draw",
        "polyprune.zoo._render", "polyprune.zoo._models",
    }  # fmt: skip


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_benchmarks_and_examples_use_only_public_polyprune(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    found = private_uses(path.read_text())
    known = KNOWN.get(relative, set())
    assert found <= known, f"{relative} uses private polyprune: {sorted(found - known)}"
    assert known <= found, f"{relative} no longer needs {sorted(known - found)}: drop it in KNOWN"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import: level > 0 for relative ones."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or ""))
    return out


@pytest.mark.parametrize(
    "path", sorted(ROOT.glob("benchmarks/**/*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_benchmarks_never_import_tests(path: Path) -> None:
    tops = {module.split(".")[0] for level, module in _imports(path) if level == 0}
    assert not tops & {"tests", "conftest", "helpers"}, f"{path.name} imports the tests"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_single_file_benchmarks_run_as_a_file_and_as_a_module(path: Path) -> None:
    imports = _imports(path)
    siblings = {p.stem for p in ROOT.glob("benchmarks/*")} | {"benchmarks"}
    assert all(level == 0 for level, _ in imports), "a relative import fails as a file"
    bad = {m for _, m in imports if m.split(".")[0] in siblings}
    assert not bad, f"imports {bad}: as a file, benchmarks/ is not a package"
    tree = ast.parse(path.read_text())
    guards = [
        n for n in tree.body
        if isinstance(n, ast.If) and ast.unparse(n.test) == "__name__ == '__main__'"
    ]  # fmt: skip
    assert guards, "no `if __name__ == '__main__':`"
