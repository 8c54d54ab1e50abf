"""Selecting rows and averaging them over seeds; formatting numbers for the report.

Means ± std are over seeds of each seed's mean (NaN and None values left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from .rows import Fitted

FAMILY_ORDER = ("planted", "concepts-merged", "digits-merged")


class Keyed(Protocol):
    """What every row has: its family and seed."""

    @property
    def family(self) -> str: ...

    @property
    def seed(self) -> int: ...


R = TypeVar("R", bound=Keyed)
F = TypeVar("F", bound=Fitted)


def select(
    rows: Iterable[F],
    *,
    family: str | None = None,
    method: str | None = None,
    grid: str | None = None,
    setting: float | None = None,
    loss: str | None = None,
) -> list[F]:
    """Rows fitted as given (every argument that is not None must match; ``setting`` with
    ``math.isclose``)."""
    return [
        r
        for r in rows
        if (family is None or r.family == family)
        and (method is None or r.method == method)
        and (grid is None or r.grid == grid)
        and (setting is None or math.isclose(r.setting, setting, rel_tol=1e-9))
        and (loss is None or r.loss == loss)
    ]


def in_family(rows: Iterable[R], family: str) -> list[R]:
    """The rows of one family."""
    return [r for r in rows if r.family == family]


def families(rows: Iterable[Keyed]) -> list[str]:
    """Families present, in report order."""
    present = {r.family for r in rows}
    return [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))


def per_seed(rows: Sequence[R], value: Callable[[R], float | None]) -> list[float]:
    """The mean of ``value`` over each seed's rows (NaN and None left out), one per seed."""
    seeds: dict[int, list[float]] = {}
    for r in rows:
        got = value(r)
        v = math.nan if got is None else float(got)
        if not math.isnan(v):
            seeds.setdefault(r.seed, []).append(v)
    return [float(np.mean(v)) for _, v in sorted(seeds.items())]


def stats(rows: Sequence[R], value: Callable[[R], float | None]) -> tuple[float, float, int]:
    """Mean and standard deviation over seeds of the per-seed means; and the number of seeds."""
    means = per_seed(rows, value)
    if not means:
        return math.nan, math.nan, 0
    std = float(np.std(means, ddof=1)) if len(means) > 1 else math.nan
    return float(np.mean(means)), std, len(means)


def mean(rows: Sequence[R], value: Callable[[R], float | None]) -> float:
    """The mean over seeds (:func:`stats`' first value)."""
    return stats(rows, value)[0]


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return "–" if math.isnan(x) else f"{100 * x:.1f} %"


def fmt(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std`` (just the mean for one seed, ``–`` for no data)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_stats(rows: Sequence[R], value: Callable[[R], float | None], digits: int = 2) -> str:
    """:func:`fmt` of :func:`stats`."""
    m, s, _ = stats(rows, value)
    return fmt(m, s, digits)
