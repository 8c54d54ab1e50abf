"""The command line's defaults are the library's (issue 21 §4): an option that maps to a
parameter of ``study``/``scan``/``cluster``/``save``/``summary`` has the same default, and the
parser reads it from the library's signature instead of repeating it, so they cannot drift."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import polyprune as pp
from polyprune.cli._parser import build_parser
from polyprune.methods import DEFAULT_KEEP

#: (command, the library callable, CLI dest → parameter name where they differ)
TARGETS: list[tuple[str, Callable[..., Any], dict[str, str]]] = [
    ("study", pp.study, {}),
    ("scan", pp.scan, {}),
    ("study", pp.cluster, {}),
    ("scan", pp.cluster, {}),
    ("study", pp.results.StudyResult.save, {}),
    ("scan", pp.results.Scan.save, {}),
    ("scan", pp.results.Scan.summary, {"show": "n"}),
]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


@pytest.mark.parametrize(("command", "fn", "renamed"), TARGETS)
def test_cli_defaults_are_the_library_defaults(
    command: str, fn: Callable[..., Any], renamed: dict[str, str]
) -> None:
    params = inspect.signature(fn).parameters
    compared = 0
    for action in _commands()[command]._actions:
        name = renamed.get(action.dest, action.dest)
        if name not in params or params[name].default is inspect.Parameter.empty:
            continue
        library = params[name].default
        if name == "keep" and library is None:  # None: the method's own, DEFAULT_KEEP
            library = DEFAULT_KEEP
        assert _plain(action.default) == _plain(library), (command, action.dest)
        compared += 1
    assert compared >= 1


def _other(value: Any) -> Any:
    """A default other than ``value`` (None and flags: unchanged, see below)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value / 2 if isinstance(value, float) else value + 7
    if isinstance(value, str):
        return value + "-other"
    return (*reversed(value), "other")


def test_the_parser_reads_the_library_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every library default the parser shows changes with the library: change them all (the
    same change for a parameter several functions share, as study's and cluster's ``alpha``)
    and a parser built afterwards shows the changed ones; a default the parser repeated would
    keep the old value. Flags (store_true, whose library default the test above holds at False)
    and None (keep: each method's own) are left alone."""
    for fn in {fn for _, fn, _ in TARGETS}:
        if fn.__kwdefaults__:
            kw = {name: _other(value) for name, value in fn.__kwdefaults__.items()}
            monkeypatch.setattr(fn, "__kwdefaults__", kw)
        if fn.__defaults__:
            monkeypatch.setattr(fn, "__defaults__", tuple(map(_other, fn.__defaults__)))
    changed = 0
    commands = _commands()
    for command, fn, renamed in TARGETS:
        params = inspect.signature(fn).parameters
        for action in commands[command]._actions:
            name = renamed.get(action.dest, action.dest)
            if name not in params or params[name].default in (None, inspect.Parameter.empty):
                continue
            if isinstance(params[name].default, bool):
                continue
            assert _plain(action.default) == _plain(params[name].default), (command, name)
            changed += 1
    assert changed >= 12
