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


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("labels", [1.5] * 6, "labels must be integers"),
        ("labels", torch.full((6,), float("nan")), "NaN"),
        ("labels", [0, 0, 2, 2, -1, -1], "every cluster present"),
        ("labels", [0, 0, 1, 1, -7, -1], r"-1 \(noise\)"),
        ("labels", [[0]] * 6, "1-D"),
        ("probabilities", [0.5] * 5, "one per label"),
        ("probabilities", [1.5] * 6, r"in \[0, 1\]"),
        ("p_value", 2.0, "p_value must be in"),
        ("min_cluster_size", 1, "min_cluster_size"),
        ("alpha", 1.0, "alpha"),
    ],
)
def test_from_dict_refuses_what_to_dict_never_writes(field, value, match):
    """A damaged saved clustering is refused with the field named, never rounded or cast (a
    NaN label cast to int is -2**63; a label 1.5 would silently be cluster 1)."""
    good = pp.results.Clustering(
        np.array([0, 0, 1, 1, -1, -1]), np.array([1.0, 0.9, 1.0, 0.8, 0.0, 0.0]), 2,
        statistic=0.3, p_value=0.01,
    )  # fmt: skip
    again = pp.results.Clustering.from_dict(good.to_dict())
    assert again.sizes == [2, 2] and again.is_polysemantic
    data = good.to_dict()
    data[field] = value
    with pytest.raises(ValueError, match=match):
        pp.results.Clustering.from_dict(data)
