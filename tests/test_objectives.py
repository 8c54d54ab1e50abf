"""Objectives: the scalar a subnetwork preserves, read from one unit's channel."""

from __future__ import annotations

import pytest
import torch
from helpers import layer_output
from torch import nn

from polyprune import Unit
from polyprune.targets import OBJECTIVE_KINDS, Objective, as_objective


@pytest.mark.parametrize(("h", "w", "center"), [(5, 5, (2, 2)), (4, 6, (1, 2)), (1, 1, (0, 0))])
def test_position_defaults_to_the_map_center(h: int, w: int, center: tuple[int, int]) -> None:
    out = torch.randn(3, 4, h, w)
    expected = out[:, 2, center[0], center[1]].sum()
    assert torch.equal(Objective(Unit("x", 2))(out), expected)
    assert torch.equal(Objective(Unit("x", 2, center))(out), expected)


def test_kinds_by_hand() -> None:
    out = torch.randn(2, 3, 4, 4)
    channel = out[:, 1]
    assert torch.equal(Objective(Unit("x", 1, (3, 0)))(out), channel[:, 3, 0].sum())
    assert torch.equal(Objective(Unit("x", 1), "sum")(out), channel.sum())
    assert torch.equal(Objective(Unit("x", 1), "abs_sum")(out), channel.abs().sum())
    assert torch.equal(Objective(Unit("x", 1), lambda m: m.amax())(out), channel.amax())
    assert OBJECTIVE_KINDS == ("position", "sum", "abs_sum")


def test_maps_of_other_ranks() -> None:
    line = torch.randn(2, 3, 7)  # Conv1d: the center is (7 - 1) // 2
    assert torch.equal(Objective(Unit("x", 0))(line), line[:, 0, 3].sum())
    flat = torch.randn(5, 3)  # Linear: no map, the channel itself
    assert torch.equal(Objective(Unit("x", 2))(flat), flat[:, 2].sum())


def test_value_reads_the_layer_and_leaves_the_model_as_found(alexnet: nn.Module) -> None:
    x = torch.rand(2, 3, 99, 99)
    alexnet.train()
    try:
        value = Objective(Unit("features.3", 5), "abs_sum").value(alexnet, x)
        assert alexnet.training and all(m.training for m in alexnet.modules())
    finally:
        alexnet.eval()
    expected = layer_output(alexnet, "features.3", x)[:, 5].abs().sum()
    torch.testing.assert_close(value, expected)


def test_as_objective() -> None:
    unit = Unit("features.10", 3)
    assert as_objective(unit) == Objective(unit, "position")
    objective = Objective(unit, "sum")
    assert as_objective(objective) is objective
    with pytest.raises(TypeError, match="Objective or Unit"):
        as_objective("features.10")  # type: ignore[arg-type]


def test_bad_objectives() -> None:
    with pytest.raises(ValueError, match=r"one of \('position', 'sum', 'abs_sum'\)"):
        Objective(Unit("x", 0), "mean")
    with pytest.raises(TypeError, match="must be a Unit"):
        Objective("x")  # type: ignore[arg-type]
    out = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="channel 3 is out of range"):
        Objective(Unit("x", 3))(out)
    with pytest.raises(ValueError, match=r"position \(4, 0\) is outside the 4×4 map"):
        Objective(Unit("x", 0, (4, 0)))(out)
    with pytest.raises(ValueError, match=r"position \(0, 0\) is outside"):
        Objective(Unit("x", 0, (0, 0)))(torch.randn(2, 3, 5))  # a 2-D position on a 1-D map
    with pytest.raises(ValueError, match="one-element tensor"):
        Objective(Unit("x", 0), lambda m: m)(out)
