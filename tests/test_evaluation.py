"""Evaluation: separation, overlap against independence, held-out split, evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from torch import nn

import polyprune as pp


def test_separation_matches_sklearn_and_hand_dprime():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 50), rng.normal(0.0, 2.0, 70)
    a[:5] = b[:5]  # ties
    s = pp.evaluation.separation(torch.from_numpy(a), b)
    y = np.r_[np.ones(50), np.zeros(70)]
    assert s.auroc == pytest.approx(roc_auc_score(y, np.r_[a, b]), abs=1e-12)
    want = (a.mean() - b.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert s.dprime == pytest.approx(want, rel=1e-12)
    assert (s.n_members, s.n_others) == (50, 70)
    with pytest.raises(ValueError, match="non-empty"):
        pp.evaluation.separation(np.array([]), b)


def _masks(bits: dict[str, list[bool]], region: dict[str, list[bool]] | None = None) -> pp.Masks:
    shapes = {k: (len(v), 1, 3, 3) for k, v in bits.items()}
    return pp.Masks(
        {k: torch.tensor(v).reshape(-1, 1) for k, v in bits.items()},
        "kernel",
        weight_shapes=shapes,
        regions=None
        if region is None
        else {k: torch.tensor(v).reshape(-1, 1) for k, v in region.items()},
    )


def test_overlap_single_layer_is_the_hypergeometric_tail():
    rng = np.random.default_rng(1)
    n = 200
    a = rng.random(n) < 0.3
    b = rng.random(n) < 0.2
    a[:20] = b[:20] = True  # share more than chance
    o = pp.evaluation.overlap(_masks({"w": a.tolist()}), _masks({"w": b.tolist()}))
    x, ka, kb = int((a & b).sum()), int(a.sum()), int(b.sum())
    assert o.intersection == x
    assert o.p_value == pytest.approx(stats.hypergeom(n, ka, kb).sf(x - 1), rel=1e-9)
    assert o.expected_intersection == pytest.approx(ka * kb / n)
    assert o.expected_iou == pytest.approx((ka * kb / n) / (ka + kb - ka * kb / n))
    assert o.iou == pytest.approx(x / int((a | b).sum()))


def test_overlap_extremes_and_layers():
    same = _masks({"a": [True, False] * 10, "b": [True] * 3 + [False] * 7})
    o = pp.evaluation.overlap(same, same)
    assert o.iou == 1.0 and o.p_value < 1e-3
    left = _masks({"a": [True] * 10 + [False] * 10, "b": [True] * 5 + [False] * 5})
    right = _masks({"a": [False] * 10 + [True] * 10, "b": [False] * 5 + [True] * 5})
    o = pp.evaluation.overlap(left, right)
    assert o.iou == 0.0 and o.intersection == 0 and o.p_value == pytest.approx(1.0)


def test_overlap_counts_only_the_region():
    region = {"w": [True] * 10 + [False] * 10}
    a = _masks({"w": [True] * 5 + [False] * 5 + [True] * 10}, region)
    b = _masks({"w": [True] * 5 + [False] * 5 + [True] * 10}, region)
    o = pp.evaluation.overlap(a, b)
    assert o.intersection == 5 and o.expected_intersection == pytest.approx(2.5)


def test_held_out_split_is_stratified_and_seeded():
    labels = np.array([0] * 50 + [1] * 10 + [-1] * 7 + [2])
    fit, held = pp.evaluation.held_out_split(labels, 0.2, seed=3)
    assert sorted(fit.tolist() + held.tolist()) == list(range(len(labels)))
    assert [int((torch.as_tensor(labels)[held] == c).sum()) for c in (0, 1, -1, 2)] == [10, 2, 1, 0]
    again = pp.evaluation.held_out_split(labels, 0.2, seed=3)
    assert torch.equal(again[0], fit) and torch.equal(again[1], held)
    with pytest.raises(ValueError, match="fraction"):
        pp.evaluation.held_out_split(labels, 1.0)


def _two_path_net() -> nn.Sequential:
    """Unit 0 of layer "2" sums input channel 0 (path A) and input channel 1 (path B)."""
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        model.get_parameter("0.weight").copy_(torch.eye(2).reshape(2, 2, 1, 1))
        model.get_parameter("2.weight").fill_(1.0)
    return model.eval()


def test_evaluate_on_a_known_network():
    model = _two_path_net()
    a = torch.zeros(20, 2, 3, 3)
    a[:, 0] = torch.linspace(1, 2, 20)[:, None, None]  # cluster 0: channel 0 only
    b = torch.zeros(20, 2, 3, 3)
    b[:, 1] = torch.linspace(1, 2, 20)[:, None, None]  # cluster 1: channel 1 only
    images, labels = torch.cat([a, b]), torch.tensor([0] * 20 + [1] * 20)
    path_a = pp.Masks({"0.weight": torch.tensor([[True, False], [False, False]]),
                       "2.weight": torch.tensor([[True, False]])}, "kernel")  # fmt: skip
    path_b = pp.Masks({"0.weight": torch.tensor([[False, False], [False, True]]),
                       "2.weight": torch.tensor([[False, True]])}, "kernel")  # fmt: skip
    fit, held = pp.evaluation.held_out_split(labels, 0.25)
    ev = pp.evaluate(
        model, pp.Unit("2", 0), images[fit], labels[fit], {0: path_a, 1: path_b},
        held_out=(images[held], labels[held]),
    )  # fmt: skip
    for label in (0, 1):
        c = ev.clusters[label]
        assert abs(c.before.auroc - 0.5) < 0.05  # the original unit cannot tell them apart
        assert c.after.auroc == 1.0 and c.after_held_out is not None
        assert c.after_held_out.auroc == 1.0
        assert c.pearson_r == pytest.approx(1.0)  # the cluster's own response is untouched
        assert c.relative_error == pytest.approx(0.0, abs=1e-6)
        assert c.activation_kept == pytest.approx(1.0)
        assert c.relative_error_held_out == pytest.approx(0.0, abs=1e-6)
        assert c.activation_kept_held_out == pytest.approx(1.0)
    assert ev.overlaps[(0, 1)].iou == 0.0
    data = ev.to_dict()
    assert data["clusters"]["0"]["after"]["auroc"] == 1.0 and "0-1" in data["overlaps"]
    with pytest.raises(ValueError, match="label"):
        pp.evaluate(model, pp.Unit("2", 0), images, labels, {5: path_a})


def test_faithfulness_measures():
    from polyprune.evaluation import faithfulness

    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    r, err, kept = faithfulness(0.5 * a + 1.0, a)
    assert r == pytest.approx(1.0)  # blind to scale and offset
    expected = float((0.5 * a + 1.0 - a).norm() / a.norm())
    assert err == pytest.approx(expected) and kept == pytest.approx((0.5 * 2.5 + 1.0) / 2.5)
    r, err, kept = faithfulness(torch.zeros(4), a)  # a silent subnetwork
    assert math.isnan(r) and err == pytest.approx(1.0) and kept == 0.0
    _, err, kept = faithfulness(a, torch.zeros(4))  # undefined against a silent unit
    assert math.isnan(err) and math.isnan(kept)


def test_pearson_matches_numpy_and_is_nan_for_constants():
    from polyprune._measures import _pearson

    rng = np.random.default_rng(2)
    a, b = torch.from_numpy(rng.normal(size=40)), torch.from_numpy(rng.normal(size=40))
    assert _pearson(a, b) == pytest.approx(np.corrcoef(a.numpy(), b.numpy())[0, 1], rel=1e-12)
    assert math.isnan(_pearson(torch.ones(5), a[:5]))
