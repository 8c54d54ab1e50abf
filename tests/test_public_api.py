"""The public surface: what `__all__` lists exists; the 0.1 names resolve with a warning."""

from __future__ import annotations

import importlib

import pytest

import polyprune as pp
from polyprune import _MOVED

PUBLIC_MODULES = [
    "polyprune",
    "polyprune.evaluation",
    "polyprune.methods",
    "polyprune.plot",
    "polyprune.results",
    "polyprune.scoring",
    "polyprune.sparsify",
    "polyprune.zoo",
]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_name_in_all_exists_and_is_documented(module):
    mod = importlib.import_module(module)
    assert len(set(mod.__all__)) == len(mod.__all__), "a name listed twice"
    for name in mod.__all__:
        obj = getattr(mod, name)
        if callable(obj) or isinstance(obj, type):
            assert (obj.__doc__ or "").strip(), f"{module}.{name} has no docstring"


@pytest.mark.parametrize("name", sorted(_MOVED))
def test_a_moved_name_resolves_to_its_new_home_with_a_warning(name):
    module, _, attr = _MOVED[name].rpartition(".")
    with pytest.warns(DeprecationWarning, match=f"polyprune.{name} moved to {_MOVED[name]}"):
        old = getattr(pp, name)
    assert old is getattr(importlib.import_module(module), attr)
    assert name not in pp.__all__


def test_paper_settings_is_gone_but_points_to_the_config():
    with pytest.warns(DeprecationWarning, match="CSConfig.paper"):
        settings = pp.PAPER_SETTINGS
    assert settings == pp.CSConfig.paper().to_dict()


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        pp.nonsense  # noqa: B018
