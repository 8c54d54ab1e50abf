"""Unit: construction checks and validation against a model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polyprune as pp


def test_validate_accepts_in_range_and_returns_self(alexnet):
    unit = pp.Unit("features.10", 255)
    assert unit.validate(alexnet) is unit
    assert pp.Unit("features.11", 3, (12, 12)).validate(alexnet, (224, 224)).position == (12, 12)


@pytest.mark.parametrize(
    ("unit", "match"),
    [
        (pp.Unit("features.10", 256), r"256 channels \(valid: 0..255\)"),
        (pp.Unit("features.11", 300), "out of range"),  # ReLU: counted by a forward pass
        (pp.Unit("features.9O", 0), "unknown layer 'features.9O'"),
        (pp.Unit("classifier.6", 1000), "1000 channels"),
    ],
)
def test_validate_rejects(alexnet, unit, match):
    with pytest.raises(ValueError, match=match):
        unit.validate(alexnet)


def test_position_checked_against_the_map(alexnet):
    with pytest.raises(ValueError, match="outside the 13×13 map"):
        pp.Unit("features.10", 0, (13, 0)).validate(alexnet, (224, 224))


def test_construction_checks():
    with pytest.raises(ValueError, match="≥ 0"):
        pp.Unit("a", -1)
    with pytest.raises(TypeError, match="int"):
        pp.Unit("a", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="module name"):
        pp.Unit("", 0)
    with pytest.raises(ValueError, match="pair"):
        pp.Unit("a", 0, (1, 2, 3))  # type: ignore[arg-type]
    assert pp.Unit("a", 0, [1, 2]).position == (1, 2)  # type: ignore[arg-type]
    assert pp.Unit("a", 0) == pp.Unit("a", 0, None) and hash(pp.Unit("a", 0))


def test_validate_does_not_change_the_model():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pp.Unit("2", 1).validate(model, (8, 8))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
