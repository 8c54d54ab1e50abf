"""Kernel-recovery ROC AUC (pp.evaluation.circuit_scores(..., scores)): threshold-free, against
scikit-learn's on random scores, and on the hand-built network for every scoring method."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

import polyprune as pp
from polyprune import zoo
from polyprune.evaluation import circuit_scores


def masks(kernels: torch.Tensor, region: torch.Tensor | None = None) -> pp.Masks:
    regions = None if region is None else {"w": region}
    return pp.Masks({"w": kernels}, "kernel", regions=regions)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    levels=st.integers(2, 20),
)
def test_roc_auc_is_scikit_learns_over_the_region(seed: int, shape: tuple[int, int], levels: int):
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(shape, generator=g) < 0.4
    region = torch.rand(shape, generator=g) < 0.8
    scores = torch.randint(0, levels, shape, generator=g).float()  # with ties
    got = circuit_scores(masks(truth, region), masks(truth, region), {"w": scores}).roc_auc
    y, s = truth[region], scores[region]
    if y.all() or not y.any():
        assert math.isnan(got)
    else:
        assert got == pytest.approx(roc_auc_score(y.numpy(), s.numpy()))


def test_roc_auc_extremes_and_bad_scores() -> None:
    truth = masks(torch.tensor([[True, False], [False, True]]))
    perfect = {"w": torch.tensor([[2.0, 0.0], [1.0, 3.0]])}
    assert circuit_scores(truth, truth, perfect).roc_auc == 1.0
    assert circuit_scores(truth, truth, {"w": -perfect["w"]}).roc_auc == 0.0
    assert circuit_scores(truth, truth, {"w": torch.ones(2, 2)}).roc_auc == 0.5
    assert math.isnan(circuit_scores(truth, truth).roc_auc)
    with pytest.raises(ValueError, match="no scores for"):
        circuit_scores(truth, truth, {"v": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="shape"):
        circuit_scores(truth, truth, {"w": torch.ones(3)})


@pytest.mark.parametrize("name", ["snip", "actgrad", "attribution"])
def test_gradient_scorers_rank_the_handbuilt_circuit_first(name: str) -> None:
    """Every non-circuit kernel of the hand-built network scores exactly 0, every circuit
    kernel more: ROC AUC 1, whatever the cut."""
    net = zoo.handbuilt()
    scores = pp.scoring.create(name, progress=False).score(net.model, net.images, net.unit)
    found = pp.Masks.from_scores(scores, 0.05)
    assert circuit_scores(found, net.truth, scores).roc_auc == 1.0


def test_magnitude_points_away_from_the_handbuilt_circuit() -> None:
    net = zoo.handbuilt()  # most other kernels are larger, by construction: below chance
    scores = pp.scoring.Magnitude().score(net.model, None, net.unit)
    assert circuit_scores(net.truth, net.truth, scores).roc_auc < 0.3
