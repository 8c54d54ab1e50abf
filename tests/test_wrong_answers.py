"""Inputs that gave a silently wrong answer (issue 20 §3): now a right one or a clear error."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import polyprune as pp
from polyprune import zoo

X = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 4, 3)
    ).eval()


# -- subnetworks and top-k's of another unit or model ------------------------------------------


def test_evaluate_refuses_subnetworks_fitted_for_another_unit():
    model, members = _net(), torch.arange(24) % 2 == 0
    sub = pp.fit_subnetwork(model, pp.Unit("3", 1), X, members, "snip", keep=0.3, progress=False)
    labels = members.long()
    with pytest.raises(ValueError, match=r"subnetworks\[0\] was fitted for 3\[1\], not .* 3\[2\]"):
        pp.evaluate(model, pp.Unit("3", 2), X, labels, {0: sub})
    with pytest.raises(ValueError, match=r"subnetworks\[0\] was fitted for 3\[1\]"):
        pp.evaluate(model, pp.Unit("3", 2), X, labels, {0: sub.masks})
    # masks that lost their unit are still told apart by their regions
    bare = pp.Masks(dict(sub.masks), "kernel", regions=sub.masks.regions)
    with pytest.raises(ValueError, match=r"regions .* differ from those of 3\[2\] at '3.weight'"):
        pp.evaluate(model, pp.Unit("3", 2), X, labels, {0: bare})
    for ok in (sub, sub.masks, bare):  # the unit they were fitted for is evaluated
        assert pp.evaluate(model, pp.Unit("3", 1), X, labels, {0: ok}).clusters[0].kept_fraction > 0


def test_study_refuses_a_top_recorded_on_another_model():
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(200, size=zoo.PLANTED_SIZE, seed=4)
    unit = pp.Unit(*zoo.PLANTED_TARGET)
    top = pp.top_activating(model, unit, images, k=40, keep_inputs=True, progress=False)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.features[3].weight.mul_(1.5)  # same architecture, other weights
    with pytest.raises(ValueError, match=r"top does not belong to this model: features\.6\[0\]"):
        pp.study(other, unit, images, top=top, methods=["snip"], progress=False)
    result = pp.study(model, unit, images, top=top, methods=["snip"], progress=False)
    assert result.top is top
