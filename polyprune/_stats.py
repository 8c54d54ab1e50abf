"""Private (foundation): the statistics behind evaluation (NumPy/SciPy, no polyprune types) and the
one rule for dead and constant units."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

__all__ = [
    "DEGENERATE",
    "auroc_dprime",
    "degenerate",
    "intersection_p_value",
    "nan_to_none",
    "none_to_nan",
]

#: Why a unit's top-k say nothing about what it responds to. A unit with any of these flags is
#: never polysemantic, and nothing is fitted for it: ``scan`` and ``study`` decide it here alike.
DEGENERATE = {
    "dead": "never positive on the data (max activation ≤ 0): dead after a ReLU",
    "constant": "one value on all its top-k items: its top-k are arbitrary",
}


def degenerate(values: Tensor) -> list[str]:
    """The :data:`DEGENERATE` flags of a unit from its top-k values (1-D, at least one).

    ``"dead"`` when the largest (the unit's maximum over the data) is ≤ 0, ``"constant"`` when
    all are equal; in that order, ``[]`` for a unit whose top-k mean something.
    """
    v = values.detach().reshape(-1)
    top, bottom = float(v.max()), float(v.min())
    return [f for f, bad in (("dead", top <= 0.0), ("constant", top == bottom)) if bad]


def auroc_dprime(a: NDArray[np.float64], b: NDArray[np.float64]) -> tuple[float, float]:
    """AUROC (ties count ½) and d′ = (μa − μb) / √((σa² + σb²)/2) of two 1-D samples."""
    from scipy import stats  # imported here: scipy.stats costs ~1 s at import

    ranks = stats.rankdata(np.concatenate([a, b]))
    auroc = (ranks[: a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size)
    pooled = math.sqrt(
        (a.var(ddof=1 if a.size > 1 else 0) + b.var(ddof=1 if b.size > 1 else 0)) / 2
    )
    diff = float(a.mean() - b.mean())
    dprime = diff / pooled if pooled > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return float(auroc), float(dprime)


def intersection_p_value(layers: Sequence[tuple[int, int, int, int]]) -> tuple[int, float, float]:
    """``(observed, expected, p)`` for the intersection of two masks drawn independently.

    Each layer is ``(n, ka, kb, x)``: ``n`` elements, ``ka``/``kb`` kept by each mask, ``x``
    kept by both. Under independence the layer's intersection is hypergeometric; ``p`` is the
    probability of a total intersection at least as large as observed: the exact convolution
    of the layers' laws, or a normal approximation above 10⁵ terms.
    """
    from scipy import stats

    observed, expected, var = 0, 0.0, 0.0
    pmf: NDArray[np.float64] | None = np.ones(1)
    for n, ka, kb, x in layers:
        observed, expected = observed + x, expected + (ka * kb / n if n else 0.0)
        var += kb * (ka / n) * (1 - ka / n) * (n - kb) / (n - 1) if n > 1 else 0.0
        if pmf is not None and pmf.size * (min(ka, kb) + 1) <= 100_000:
            pmf = np.convolve(pmf, stats.hypergeom.pmf(np.arange(min(ka, kb) + 1), n, ka, kb))
        else:
            pmf = None
    if pmf is not None:
        return observed, expected, float(np.clip(pmf[observed:].sum(), 0.0, 1.0))
    if var <= 0:
        return observed, expected, 1.0
    return observed, expected, float(stats.norm.sf((observed - 0.5 - expected) / math.sqrt(var)))


def nan_to_none(value: float) -> float | None:
    """A statistic as saved (JSON has no NaN: a missing statistic is saved as None)."""
    return None if math.isnan(value) else float(value)


def none_to_nan(value: Any) -> float:
    """A saved statistic read back (:func:`nan_to_none`'s None is NaN again)."""
    return math.nan if value is None else float(value)
