"""Private (kernel): a SigClust-style test of cluster structure, and Benjamini–Hochberg q-values.

NumPy, no polyprune types. :func:`polyprune.clustering.significance` documents
the test; this module computes it.

- **Statistic**: the 2-means cluster index, within-cluster sum of squares of a 2-means split
  over the total sum of squares (small: two groups). The split: the codes are cut at 0 along
  their leading principal axis (power iteration from the first axis), then Lloyd's iterations
  until no code moves. The same algorithm runs on the codes and on every null draw.
- **Null**: one Gaussian (Liu, Hayes, Nobel & Marron 2008), any mean and covariance. Given
  the codes' mean and sample covariance (sufficient for a Gaussian), Gaussian codes are a
  uniformly random rotation of any configuration with that covariance, so the null draws are
  exactly that (a rotation test, Langsrud 2005): centered Gaussian draws whitened by QR, times
  the codes' principal standard deviations. No covariance is estimated and nothing is
  thresholded: the test is exact (up to Monte Carlo) in any dimension, also with more channels
  than rows. The index is invariant to rotations and translations, so everything runs on the
  principal-component scores, in ``min(N - 1, C)`` dimensions, never ``C``.
- **p-value**: Monte Carlo with sequential stopping (Besag & Clifford 1991): null draws in
  batches (the first of ``hits`` draws, enough to stop at p = 1) until ``hits`` of them have
  an index at most the codes' (then ``p = hits / draws``) or ``max_draws`` are drawn; then,
  below ``hits / max_draws``, the Gaussian tail of the null indices,
  ``Φ((index − mean) / sd)`` (SigClust's normal approximation), which resolves the small
  p-values that Benjamini–Hochberg over many channels needs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from . import _validate as valid

__all__ = [
    "HITS", "MAX_DRAWS", "METHODS", "checked", "cluster_index", "min_p", "q_values", "scores",
    "sigclust", "strongest",
]  # fmt: skip

#: Null draws with an index ≤ the codes' after which the Monte Carlo stops (Besag–Clifford h).
HITS = 10
#: The most null draws per test.
MAX_DRAWS = 200
#: Null draws per batch (memory: BATCH × N × min(N - 1, C) doubles).
BATCH = 25
#: The tests :func:`sigclust` runs (``clustering.significance``'s ``method``).
METHODS = ("gaussian", "minp")
#: Rounds of the radial Gaussianization of the min-p test's null covariance.
ROUNDS = 3
_POWER_STEPS = 10
_LLOYD_STEPS = 50


def scores(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Principal-component scores (N, r) of ``x`` (N, C) and the sample variances (r,) along
    them, for the r components with nonzero variance (r ≤ min(N - 1, C))."""
    x = x - x.mean(axis=0)
    wide = x.shape[0] <= x.shape[1]
    power, vectors = np.linalg.eigh(x @ x.T if wide else x.T @ x)  # the smaller Gram matrix
    power, vectors = power[::-1], vectors[:, ::-1]
    keep = power > power[0] * 1e-12 if power.size and power[0] > 0 else power > np.inf
    z = vectors[:, keep] * np.sqrt(power[keep]) if wide else x @ vectors[:, keep]
    return z, power[keep] / max(x.shape[0] - 1, 1)


def _means(
    x: NDArray[np.float64], side: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The means (B, r) of the rows of ``x`` (B, N, r) on each side of ``side`` (B, N), and
    their counts (B,) (an empty side has mean 0)."""
    ones = side.astype(x.dtype)
    count = ones.sum(1)
    sums = np.matmul(ones[:, None, :], x)[:, 0]
    rest = (x.shape[1] - count)[:, None]
    other = (x.sum(1) - sums) / np.maximum(rest, 1.0)
    return sums / np.maximum(count, 1.0)[:, None], other, count, rest[:, 0]


def _project(x: NDArray[np.float64], axis: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x`` (B, N, r) times ``axis`` (B, r): (B, N), a batched matrix-vector product."""
    projected: NDArray[np.float64] = np.matmul(x, axis[:, :, None])[:, :, 0]
    return projected


def cluster_index(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 2-means cluster index of each batch ``x`` (B, N, r): within-SS / total-SS in [0, 1]
    (NaN where all rows are equal)."""
    x = x - x.mean(axis=1, keepdims=True)
    total = (x * x).sum(axis=(1, 2))
    axis = np.zeros((x.shape[0], x.shape[2]))
    axis[:, 0] = 1.0
    for _ in range(_POWER_STEPS):
        axis = np.matmul(_project(x, axis)[:, None, :], x)[:, 0]
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-300)
    side = _project(x, axis) > 0
    for _ in range(_LLOYD_STEPS):  # nearer the first mean: 2 x·(m1 − m0) > |m1|² − |m0|²
        one, other, _, _ = _means(x, side)
        bar = ((one * one).sum(1) - (other * other).sum(1))[:, None]
        moved = 2 * _project(x, one - other) > bar
        if np.array_equal(moved, side):
            break
        side = moved
    one, other, count, rest = _means(x, side)
    between = count * (one * one).sum(1) + rest * (other * other).sum(1)  # rows centred
    with np.errstate(invalid="ignore", divide="ignore"):
        index = (total - between) / np.where(total > 0, total, 1.0)
        return np.where(total > 0, np.clip(index, 0.0, 1.0), np.nan)


def sigclust(
    x: NDArray[np.float64],
    seed: int,
    max_draws: int = MAX_DRAWS,
    hits: int = HITS,
    method: str = "gaussian",
) -> tuple[float, float, int]:
    """``(index, p, draws)`` of the codes ``x`` (N, C): ``method`` ``"gaussian"`` against one
    Gaussian with their covariance, ``"minp"`` the min-p of two statistics (:func:`min_p`);
    ``p`` is NaN for codes without spread (all rows equal)."""
    z, variances = scores(np.asarray(x, dtype=np.float64))
    if z.shape[1] == 0:
        return math.nan, math.nan, 0
    observed = float(cluster_index(z[None])[0])
    if math.isnan(observed):
        return math.nan, math.nan, 0
    if method == "minp":
        return observed, min_p(z, observed, seed, max_draws), max_draws
    rng = np.random.default_rng(seed)
    scale = np.sqrt(variances)
    null = np.empty(0)
    while null.size < max_draws:
        size = min(BATCH if null.size else hits, max_draws - null.size)  # first: h draws
        null = np.concatenate([null, cluster_index(_rotations(rng, size, *z.shape) * scale)])
        hit = np.flatnonzero(null <= observed)
        if hit.size >= hits:  # Besag–Clifford: the h-th hit came at draw L, p = h / L
            return observed, hits / (int(hit[hits - 1]) + 1), int(null.size)
    return observed, _normal_tail(null, observed), int(null.size)


def signs(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Spatial signs of each batch ``x`` (B, N, r): rows centred at their mean, scaled to unit
    norm (a row at the mean stays 0)."""
    x = x - x.mean(axis=-2, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def gaussianized_variances(z: NDArray[np.float64], rounds: int = ROUNDS) -> NDArray[np.float64]:
    """Eigenvalues of the covariance of the radially Gaussianized scores ``z`` (N, r).

    Each round, every row of ``z`` is rescaled about the mean so that its Mahalanobis radius
    under the current covariance becomes the chi(r) quantile of its rank: a shape that heavy
    rows do not inflate, equal to the sample covariance's for Gaussian codes (up to sampling)
    and for codes whose radii are all equal (fewer rows than dimensions).
    """
    from scipy.special import chdtri  # imported here: scipy costs time at import

    n, r = z.shape
    z = z - z.mean(axis=0)
    targets = np.sqrt(chdtri(r, 1 - (np.arange(n) + 0.5) / n))  # the chi(r) quantiles
    y = z
    for _ in range(rounds):
        covariance = y.T @ y / max(n - 1, 1)
        radii = np.sqrt(np.maximum((z * np.linalg.solve(covariance, z.T).T).sum(1), 0.0))
        if radii.min() <= 0 or np.ptp(radii) <= 1e-9 * radii.max():
            break  # all radii equal: nothing to Gaussianize (the index is scale invariant)
        scale = np.empty(n)
        scale[np.argsort(radii, kind="stable")] = targets
        y = z * (scale / radii)[:, None]
    variances = np.linalg.eigvalsh(y.T @ y / max(n - 1, 1))[::-1]
    return np.maximum(variances, 0.0)


def min_p(z: NDArray[np.float64], observed: float, seed: int, draws: int) -> float:
    """The min-p of the 2-means index of the scores ``z`` (N, r) (its value: ``observed``) and
    of their spatial signs, against rotation draws with the Gaussianized covariance.

    Every one of ``draws`` null draws is made (no early stop). The codes and the draws are
    ``draws + 1`` exchangeable items under the null; each gets, per statistic, its rank among
    all of them (1: the most clustered), and its min-p is the smaller rank (Westfall–Young: the
    draws' own min-p, over the same draws). ``p`` = the share of items whose smaller rank is at
    most the codes'. Its floor is ``1 / (draws + 1)``: where no draw is as clustered as the
    codes by one statistic, ``p`` is at most twice the smaller Gaussian tail of the two
    statistics' null draws (Bonferroni over SigClust's normal approximation), never above the
    Monte Carlo ``p``.
    """
    rng = np.random.default_rng(seed)
    scale = np.sqrt(gaussianized_variances(z))
    first = np.empty(draws)
    second = np.empty(draws)
    for start in range(0, draws, BATCH):
        size = min(BATCH, draws - start)
        null = _rotations(rng, size, *z.shape) * scale
        first[start : start + size] = cluster_index(null)
        second[start : start + size] = cluster_index(signs(null))
    observed_signs = float(cluster_index(signs(z[None]))[0])
    items = np.stack([np.append(first, observed), np.append(second, observed_signs)])
    ranks = (items[:, None, :] <= items[:, :, None]).sum(2)  # (2, items): how many ≤ each
    smaller = ranks.min(0)
    p = float((smaller <= smaller[-1]).sum()) / (draws + 1)
    if smaller[-1] > 1:
        return p
    tails = [
        _normal_tail(null, value) for null, value in ((first, observed), (second, observed_signs))
    ]
    return min(p, 2 * min(tails))


def _normal_tail(null: NDArray[np.float64], value: float) -> float:
    """``Φ((value − mean) / sd)`` of the null draws (1 where they have no spread and are all
    below ``value``, else 0)."""
    sd = float(null.std(ddof=1))
    if sd <= 0:
        return float(value >= null[0])
    return 0.5 * math.erfc((float(null.mean()) - value) / (sd * math.sqrt(2)))


def _rotations(rng: np.random.Generator, size: int, n: int, r: int) -> NDArray[np.float64]:
    """``size`` draws of ``n`` centered rows in ``r`` dimensions whose sample covariance is the
    identity: Haar-distributed given it (QR of centered Gaussians; column signs do not matter
    to the index)."""
    g = rng.standard_normal((size, n, r))
    q, _ = np.linalg.qr(g - g.mean(axis=1, keepdims=True))
    return q * math.sqrt(n - 1)


def checked(
    codes: Tensor | NDArray[Any], values: Tensor | NDArray[Any] | None, minimum: int
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """``codes`` (N ≥ ``minimum``, C) and ``values`` (N,) as float64 arrays, checked."""
    arrays: list[NDArray[np.float64] | None] = []
    for name, item, shape in (("codes", codes, "(N, C)"), ("values", values, "(N,)")):
        if item is None:
            arrays.append(None)
            continue
        try:
            a = item.detach().cpu().double().numpy() if isinstance(item, Tensor) else item
            arrays.append(np.asarray(a).astype(np.float64, copy=False))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise valid.ArgumentTypeError(
                f"{name} must be a tensor or array of numbers {shape}, got {type(item).__name__}"
            ) from exc
    x, strength = arrays
    assert x is not None
    if x.ndim != 2:
        raise ValueError(f"codes must be 2-D (N, C), got shape {x.shape}")
    if x.shape[0] < minimum:
        raise ValueError(f"need at least {minimum} codes to cluster, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("codes contain NaN or infinite values")
    if strength is not None and strength.shape != (x.shape[0],):
        raise ValueError(
            f"values must hold one number per code, shape ({x.shape[0]},), got {strength.shape}"
        )
    if strength is not None and not np.isfinite(strength).all():
        raise ValueError("values contain NaN or infinite values")
    return x, strength


def strongest(x: NDArray[np.float64], values: NDArray[np.float64] | None) -> NDArray[np.float64]:
    """The codes of the ⌈N/2⌉ largest ``values`` (all codes without values)."""
    if values is None:
        return x
    order = np.argsort(-values, kind="stable")
    return x[order[: (x.shape[0] + 1) // 2]]


def q_values(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Benjamini–Hochberg q-values of ``p`` (NaN counts as a test with p = 1 and gets q NaN)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    ranked = filled[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    return np.where(np.isnan(p), np.nan, q)
