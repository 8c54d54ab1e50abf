"""cluster(): HDBSCAN on layer codes, defaults, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import polyprune as pp
from polyprune.clustering import default_min_cluster_size


def _blobs(n_per: int, centers: list[float], dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = np.concatenate([rng.normal(c, 1.0, (n_per, dim)) for c in centers])
    truth = np.repeat(np.arange(len(centers)), n_per)
    return codes, truth


def test_separate_blobs_are_found():
    codes, truth = _blobs(80, [0.0, 5.0, -5.0])
    result = pp.cluster(torch.from_numpy(codes).float())
    assert result.n_clusters == 3 and result.is_polysemantic
    assert adjusted_rand_score(truth, result.labels) > 0.95
    assert sum(result.sizes) + round(result.noise_fraction * len(codes)) == len(codes)
    assert result.members(0).dtype == torch.bool and int(result.members(0).sum()) == result.sizes[0]
    assert result.min_cluster_size == default_min_cluster_size(240) == 12


def test_one_blob_is_not_polysemantic():
    codes, _ = _blobs(200, [0.0])
    result = pp.cluster(codes)
    assert result.n_clusters <= 1 and not result.is_polysemantic


def test_standardize_ignores_channel_scale():
    codes, truth = _blobs(60, [0.0, 4.0], dim=8)
    scaled = codes.copy()
    scaled[:, 0] *= 1000.0  # one loud channel
    a, b = pp.cluster(codes, standardize=True), pp.cluster(scaled, standardize=True)
    assert np.array_equal(a.labels, b.labels)
    raw = pp.cluster(scaled)
    assert adjusted_rand_score(truth, raw.labels) < adjusted_rand_score(truth, b.labels)


def test_projection_option():
    codes, truth = _blobs(60, [0.0, 6.0], dim=40)
    result = pp.cluster(codes, n_components=5)
    assert result.n_clusters == 2 and adjusted_rand_score(truth, result.labels) > 0.95


@pytest.mark.parametrize(
    ("codes", "kwargs", "match"),
    [
        (np.zeros((9, 4)), {}, "at least 10"),
        (np.zeros((20,)), {}, "2-D"),
        (np.full((20, 3), np.nan), {}, "NaN"),
        (np.zeros((20, 3)), {"min_cluster_size": 1}, r"\[2, 20\]"),
        (np.zeros((20, 3)), {"min_cluster_size": 21}, r"\[2, 20\]"),
        (np.zeros((20, 3)), {"cluster_selection_method": "best"}, "eom"),
        (np.zeros((20, 3)), {"n_components": 4}, "n_components"),
    ],
)
def test_bad_input(codes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pp.cluster(codes, **kwargs)


def test_members_label_range():
    codes, _ = _blobs(40, [0.0, 6.0])
    with pytest.raises(ValueError, match="label"):
        pp.cluster(codes).members(5)
