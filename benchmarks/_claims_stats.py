"""Private to ``benchmarks/claims.py``: selecting rows and averaging them over seeds.

A row is a flat dict (see ``_claims_run``); means ± std are over seeds of each seed's mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

Row = dict[str, Any]
FAMILY_ORDER = ("planted", "concepts-merged", "digits-merged")


def select(rows: Iterable[Row], **where: Any) -> list[Row]:
    """Rows whose fields equal every ``where`` value (floats compared with isclose)."""

    def match(row: Row, key: str, want: Any) -> bool:
        got = row.get(key)
        if isinstance(want, float) and isinstance(got, int | float):
            return math.isclose(got, want, rel_tol=1e-9)
        return bool(got == want)

    return [r for r in rows if all(match(r, k, v) for k, v in where.items())]


def families(rows: Iterable[Row]) -> list[str]:
    """Families present, in report order."""
    present = {r["family"] for r in rows}
    return [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))


def per_seed(rows: Sequence[Row], value: Callable[[Row], float]) -> list[float]:
    """The mean of ``value`` over each seed's rows (NaNs ignored), one number per seed."""
    seeds: dict[int, list[float]] = {}
    for r in rows:
        v = float(value(r))
        if not math.isnan(v):
            seeds.setdefault(r["seed"], []).append(v)
    return [float(np.mean(v)) for _, v in sorted(seeds.items())]


def stats(rows: Sequence[Row], value: Callable[[Row], float] | str) -> tuple[float, float, int]:
    """Mean and standard deviation over seeds of the per-seed means; and the number of seeds."""
    fn = (lambda r: r[value]) if isinstance(value, str) else value
    means = per_seed(rows, lambda r: np.nan if fn(r) is None else fn(r))
    if not means:
        return math.nan, math.nan, 0
    std = float(np.std(means, ddof=1)) if len(means) > 1 else math.nan
    return float(np.mean(means)), std, len(means)


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return "–" if math.isnan(x) else f"{100 * x:.1f} %"


def fmt(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std`` (just the mean for one seed, ``–`` for no data)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
