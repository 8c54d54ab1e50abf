"""The min-p variant of the significance test (``significance(method="minp")``, issue 22) and the
2-means cluster index both tests share."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyprune._sigclust import (
    MAX_DRAWS,
    cluster_index,
    gaussianized_variances,
    scores,
    sigclust,
    signs,
)
from polyprune.clustering import significance

ALPHA = 0.05


def _t_cloud(rng: np.random.Generator, n: int, c: int, nu: float) -> np.ndarray:
    """``n`` rows of a multivariate t (``nu`` d.o.f.; ``inf``: Gaussian), a random covariance."""
    z = rng.standard_normal((n, c))
    if math.isfinite(nu):
        z = z / np.sqrt(rng.chisquare(nu, (n, 1)) / nu)
    return z @ rng.standard_normal((c, c))


@pytest.mark.parametrize("nu", [math.inf, 5.0])
def test_minp_holds_its_level_on_gaussian_and_heavy_tailed_clouds(nu: float) -> None:
    # documented (significance): the default test is conservative on t clouds (median p > 0.7,
    # test_significance); min-p's null follows the tails: p near uniform on both. 100 clouds at
    # 5 %: 5 ± 2.2 called; a drift to 0 % or to 10 %+ fails, and so does a median off 0.5
    rng = np.random.default_rng(11)
    ps = np.array(
        [
            significance(_t_cloud(rng, 120, 8, nu), seed=i, method="minp", max_draws=100)[1]
            for i in range(100)
        ]
    )
    assert 0.01 <= np.mean(ps < ALPHA) <= 0.10
    assert 0.35 <= np.median(ps) <= 0.65


def test_minp_power_and_its_tail_below_the_monte_carlo_floor() -> None:
    rng = np.random.default_rng(7)
    shift = np.zeros(16)
    shift[0] = 6.0
    x = np.concatenate([rng.standard_normal((50, 16)), rng.standard_normal((50, 16)) + shift])
    statistic, p, draws = sigclust(x, seed=0, method="minp")
    assert draws == MAX_DRAWS  # every draw, no early stop
    assert statistic == significance(x)[0]  # the same 2-means index as the default test
    # no draw is as clustered: p is the Bonferroni normal tail, far below 1 / (draws + 1)
    assert 0 < p < 1e-6
    assert significance(x, method="minp", max_draws=50)[1] < 1e-6


def test_minp_p_is_a_share_of_the_draws_above_the_floor() -> None:
    rng = np.random.default_rng(3)
    for i in range(5):
        p = significance(rng.standard_normal((60, 6)), seed=i, method="minp", max_draws=40)[1]
        assert p * 41 == pytest.approx(round(p * 41)) and 1 <= round(p * 41) <= 41


def test_minp_bad_method_named() -> None:
    with pytest.raises(ValueError, match="method"):
        significance(np.zeros((20, 3)), method="bogus")


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(12, 40),
    c=st.integers(2, 12),
    scale=st.floats(0.01, 100.0),
)
def test_minp_ignores_rotation_translation_and_scale(
    seed: int, n: int, c: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    x = _t_cloud(rng, n, c, 5.0)
    rotation = np.linalg.qr(rng.standard_normal((c, c)))[0]
    moved = scale * x @ rotation + rng.standard_normal(c)
    p = significance(x, seed=1, method="minp", max_draws=40)[1]
    q = significance(moved, seed=1, method="minp", max_draws=40)[1]
    # ranks may flip at a rounding-level tie: one draw's worth
    assert q == pytest.approx(p, rel=1e-6, abs=1.01 / 41)
    # the Gaussianized covariance turns with the codes and scales with their variance
    one = gaussianized_variances(scores(x)[0])
    two = gaussianized_variances(scores(moved)[0])
    assert np.allclose(two, scale**2 * one, rtol=1e-6, atol=1e-9 * scale**2 * one.max())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(4, 9), r=st.integers(1, 3))
def test_cluster_index_is_a_split_no_better_than_the_best(seed: int, n: int, r: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, r)) * rng.uniform(0.1, 3.0, r)
    total = ((x - x.mean(0)) ** 2).sum()
    splits = []
    for side in itertools.product((False, True), repeat=n):
        side_ = np.array(side)
        if side_.all() or not side_.any():
            continue
        within = sum(((g - g.mean(0)) ** 2).sum() for g in (x[side_], x[~side_]))
        splits.append(within / total)
    index = float(cluster_index(x[None])[0])
    # a 2-means split: a within-SS of some split (Lloyd's local optimum), never below the best
    assert min(splits) - 1e-12 <= index <= 1.0
    assert np.isclose(np.array(splits), index, rtol=1e-9, atol=1e-12).any()


def test_signs_are_unit_rows_about_the_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 30, 5)) * 4 + 3
    s = signs(x)
    assert np.allclose(np.linalg.norm(s, axis=-1), 1.0)
    centred = x - x.mean(axis=1, keepdims=True)
    assert np.allclose(s * np.linalg.norm(centred, axis=-1, keepdims=True), centred)
