"""Private (foundation): the one progress facility — stage lines, bars and heartbeats on stderr.

On a terminal (or in a notebook) a stage is a tqdm bar; anywhere else (a log file, a pipe, CI) it
is one plain line when the stage ends, ``[polyprune] label: done/total unit, 1.2 s``, with no
carriage returns or cursor escapes, and, while any stage runs, a heartbeat line at least every
:data:`HEARTBEAT_S` seconds naming every running stage. Stages nest (FORCE's rounds around its
batches): inside another stage a stage prints no line of its own, it shows in the heartbeat.
:func:`lines_only` turns the bars into lines on a terminal too (the CLI's ``--quiet``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["HEARTBEAT_S", "Stage", "lines_only", "say", "stage", "staged"]

T = TypeVar("T")

HEARTBEAT_S = 30.0
"""Longest silence, in seconds, while a stage runs without a bar."""

_state: dict[str, Any] = {"lines": False, "said": time.perf_counter()}
_running: list[Stage] = []


@contextmanager
def lines_only() -> Iterator[None]:
    """Plain stage lines instead of bars, also on a terminal, until the block ends."""
    before = _state["lines"]
    _state["lines"] = True
    try:
        yield
    finally:
        _state["lines"] = before


def _bars() -> bool:
    if _state["lines"]:
        return False
    if "ipykernel" in sys.modules:  # a notebook draws tqdm.auto's widget (or \r lines) well
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def say(message: str, show: bool = True) -> None:
    """``[polyprune] message`` on stderr (when ``show``)."""
    if show:
        _state["said"] = time.perf_counter()
        print(f"[polyprune] {message}", file=sys.stderr, flush=True)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


class Stage:
    """One stage's progress: :meth:`update` as work gets done; see :func:`stage`."""

    def __init__(self, label: str, total: int | None, unit: str, show: bool, leave: bool) -> None:
        self.label, self.total, self.unit, self.show = label, total, unit, show
        self.done = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        self._nested = bool(_running)
        if show and _bars():
            self._bar = tqdm(total=total, desc=label, unit=unit, leave=leave and not self._nested)

    def state(self) -> str:
        """``label: done/total unit, elapsed``."""
        count = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        return f"{self.label}: {count} {self.unit}, {_seconds(time.perf_counter() - self.start)}"

    def update(self, n: int = 1, *, total: int | None = None) -> None:
        """``n`` more done (and the total, if it is known only now)."""
        self.done += n
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        if self._bar is not None:
            self._bar.update(n)
        elif self.show:
            _heartbeat()

    def note(self, **values: object) -> None:
        """Values shown beside the bar (the CS loss); none in plain lines."""
        if self._bar is not None:
            self._bar.set_postfix({k: str(v) for k, v in values.items()}, refresh=False)

    def __enter__(self) -> Stage:
        _running.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _running.remove(self)
        if self._bar is not None:
            self._bar.close()
        elif self.show and not self._nested and exc[0] is None:
            say(self.state())


def stage(
    label: str, total: int | None = None, *, unit: str = "it", show: bool = True, leave: bool = True
) -> Stage:
    """A context manager for one stage of ``total`` steps (``None``: not known).

    >>> with stage("demo", 3, unit="step", show=False) as s:
    ...     s.update(2)
    >>> s.state().startswith("demo: 2/3 step, ")
    True
    """
    return Stage(label, total, unit, show, leave)


def staged(
    items: Iterable[T], label: str, total: int | None = None, *, unit: str = "it", show: bool = True
) -> Iterator[T]:
    """``items``, one :meth:`Stage.update` after each (the total from ``len`` when it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with stage(label, total, unit=unit, show=show) as s:
        for item in items:
            yield item
            s.update()


def _heartbeat() -> None:
    now = time.perf_counter()  # silent since the last line, or since the stages began
    if _running and now - max(_state["said"], _running[0].start) >= HEARTBEAT_S:
        say(" › ".join(s.state() for s in _running if s.show))
