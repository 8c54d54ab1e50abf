"""The command line's defaults are the library's (issue 21 §4): an option that maps to a
parameter of ``study``/``scan``/``save``/``summary`` has the same default, so they cannot drift."""

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
