"""The layers contract covers every module, and the architecture figure is drawn from it."""

from __future__ import annotations

import pkgutil

from conftest import ROOT, load_script

import polyprune


def test_every_module_is_in_exactly_one_layer():
    figure = load_script("docs/_figures/architecture.py")
    listed = [m for layer in figure.layers() for m in layer]
    assert len(listed) == len(set(listed))
    modules = {m.name for m in pkgutil.iter_modules(polyprune.__path__)} - {"__main__"}
    assert set(listed) == modules, "add new modules to [tool.importlinter] in pyproject.toml"


def test_the_figure_is_drawn_from_the_contract(tmp_path):
    figure = load_script("docs/_figures/architecture.py")
    assert len(figure.layers()) == len(figure.NAMES)
    out = figure.draw(tmp_path / "architecture.png")
    assert out.stat().st_size > 10_000
    assert (ROOT / "docs/img/architecture.png").exists()
