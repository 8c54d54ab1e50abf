"""Masks.effective (Hamblin et al.'s effective mask) and Masks.to_torch_prune."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import prune

from polyprune import Masks, Unit
from polyprune._graph.trace import GraphError
from polyprune.scoring import SNIP


def stack(widths: list[int], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def on_a_path(masks: dict[str, Tensor], names: list[str], layer: int, o: int, i: int) -> bool:
    """By depth-first search: is kernel (o, i) of ``names[layer]`` on an input→unit path?"""

    def from_input(at: int, channel: int) -> bool:  # channel of the input to layer `at`
        if at == 0:
            return True
        m = masks[names[at - 1]]
        return any(bool(m[channel, j]) and from_input(at - 1, j) for j in range(m.shape[1]))

    def to_unit(at: int, channel: int) -> bool:  # output channel of layer `at`
        if at == len(names) - 1:
            return channel == 0
        m = masks[names[at + 1]]
        return any(bool(m[k, channel]) and to_unit(at + 1, k) for k in range(m.shape[0]))

    return bool(masks[names[layer]][o, i]) and from_input(layer, i) and to_unit(layer, o)


def target_value(model: nn.Module, masks: Masks, unit: Unit, x: Tensor) -> Tensor:
    out: list[Tensor] = []
    handle = model.get_submodule(unit.layer).register_forward_hook(lambda m, a, o: out.append(o))
    try:
        with torch.no_grad(), masks.applied(model):
            model(x)
    finally:
        handle.remove()
    return out[0][:, unit.channel]


@given(
    widths=st.lists(st.integers(1, 4), min_size=3, max_size=5),
    seed=st.integers(0, 2**16),
    density=st.floats(0.2, 0.8),
)
def test_effective_is_exactly_the_kernels_on_a_path(
    widths: list[int], seed: int, density: float
) -> None:
    model = stack(widths)
    names = [f"{i}.weight" for i in range(0, 2 * (len(widths) - 1), 2)]
    g = torch.Generator().manual_seed(seed)
    raw = {n: torch.rand(model.get_parameter(n).shape[:2], generator=g) < density for n in names}
    unit = Unit(names[-1][:-7], 0)
    masks = Masks(raw, "kernel", unit=unit)
    eff = masks.effective(model)
    for layer, name in enumerate(names):
        for o, i in ((o, i) for o in range(raw[name].shape[0]) for i in range(raw[name].shape[1])):
            assert bool(eff[name][o, i]) == on_a_path(raw, names, layer, o, i)
    again = eff.effective(model)
    assert all(torch.equal(again[n], eff[n]) for n in eff)  # idempotent
    x = torch.randn(2, widths[0], 6, 6)  # no biases: dropped kernels carry nothing to the unit
    torch.testing.assert_close(
        target_value(model, eff, unit, x), target_value(model, masks, unit, x)
    )


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.a = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.b = nn.Conv2d(4, 4, 3, padding=1, bias=False, groups=2)
        self.side = nn.Conv2d(3, 2, 1, bias=False)
        self.head = nn.Conv2d(6, 3, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.b(torch.relu(self.a(h)))  # residual
        return self.head(torch.cat([h, self.side(x)], dim=1))  # channel concatenation


@pytest.mark.parametrize("granularity", ["weight", "kernel", "filter"])
@pytest.mark.parametrize("seed", range(4))
def test_effective_on_residuals_and_concatenation_keeps_the_unit_exact(
    granularity: str, seed: int
) -> None:
    torch.manual_seed(seed)
    model, unit, x = Residual().eval(), Unit("head", 1), torch.randn(2, 3, 6, 6)
    scores = SNIP(progress=False).score(model, x, unit, granularity=granularity)
    g = torch.Generator().manual_seed(seed)
    raw = {n: torch.rand(s.shape, generator=g) for n, s in scores.items()}
    for keep in (0.2, 0.5):
        fake = type(scores)(
            raw, granularity, weight_shapes=scores.weight_shapes, regions=scores.regions, unit=unit
        )
        masks = Masks.from_scores(fake, keep)
        eff = masks.effective(model)
        assert eff.kept_weights() <= masks.kept_weights()
        assert all(bool((eff[n] <= masks[n]).all()) for n in eff)
        assert eff["head.weight"][~scores.regions["head.weight"]].all()  # outside: untouched
        torch.testing.assert_close(
            target_value(model, eff, unit, x), target_value(model, masks, unit, x)
        )


def test_effective_drops_what_cannot_be_reached_by_hand() -> None:
    model = stack([2, 3, 3, 2])
    masks = Masks(
        {
            "0.weight": torch.tensor([[1, 0], [0, 0], [1, 1]]),  # channel 1 has no input
            "2.weight": torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1]]),  # 2 feeds nothing
            "4.weight": torch.tensor([[1, 1, 0], [1, 1, 1]]),
        },
        "kernel",
    )
    eff = masks.effective(model, Unit("4", 0))
    assert eff["0.weight"].int().tolist() == [[1, 0], [0, 0], [0, 0]]
    assert eff["2.weight"].int().tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert eff["4.weight"].int().tolist() == [[1, 0, 0], [0, 0, 0]]
    assert eff.unit == Unit("4", 0)


def test_effective_on_alexnet(alexnet: nn.Module) -> None:
    unit = Unit("features.8", 3)
    scores = SNIP(progress=False).score(alexnet, torch.rand(1, 3, 67, 67), unit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        masks = Masks.from_scores(scores, keep=0.1)
    eff = masks.effective(alexnet)
    assert 0 < eff.kept_fraction() < masks.kept_fraction()


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.out = nn.Conv2d(3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv(self.conv(x)))


class Rolled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.out = nn.Conv2d(2, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.roll(self.conv(x), 1, dims=2))


def test_effective_refuses_graphs_it_cannot_follow_and_masks_without_a_unit() -> None:
    rolled = Masks({"conv.weight": torch.ones(2, 3, dtype=torch.bool)}, "kernel")
    with pytest.raises(GraphError, match="cannot follow channels through the function roll"):
        rolled.effective(Rolled(), Unit("out", 0))
    flat = Masks({"conv.weight": torch.ones(2, 3, dtype=torch.bool)}, "kernel")
    with pytest.raises(ValueError, match="needs the unit"):
        flat.effective(Flat())
    # a flatten regroups channels with positions: followed all-to-all, nothing is dropped
    assert flat.effective(Flat(), Unit("fc", 0))["conv.weight"].all()
    shared = Masks({"conv.weight": torch.ones(3, 3, dtype=torch.bool)}, "kernel")
    with pytest.raises(GraphError, match="more than once"):
        shared.effective(Shared(), Unit("out", 0))


@pytest.mark.parametrize("granularity", ["weight", "kernel", "filter"])
def test_to_torch_prune_matches_applied_masks(granularity: str) -> None:
    model, x, unit = stack([3, 4, 4, 2], seed=3), torch.randn(2, 3, 6, 6), Unit("4", 1)
    scores = SNIP(progress=False).score(model, x, unit, granularity=granularity)
    masks = Masks.from_scores(scores, keep=0.3)
    with torch.no_grad(), masks.applied(model):
        expected = model(x)
    assert masks.to_torch_prune(model) is model
    assert prune.is_pruned(model)
    assert hasattr(model[0], "weight_orig") and hasattr(model[0], "weight_mask")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="already masked or pruned"):
        masks.to_torch_prune(model)
    for name in masks:
        prune.remove(model.get_submodule(name[:-7]), "weight")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # the zeros stay


@pytest.mark.parametrize(
    ("middle", "useful"), [(nn.ReLU(), [0]), (nn.LocalResponseNorm(2), [0, 1, 2, 3])]
)
def test_effective_follows_channel_mixing_operations_all_to_all(middle, useful) -> None:
    # the unit reads channel 0 of the middle op only; a channel-wise op (ReLU) passes that on to
    # channel 0 of the first conv, a channel-mixing one (LocalResponseNorm) to all its channels
    net = nn.Sequential(nn.Conv2d(3, 4, 3), middle, nn.Conv2d(4, 2, 3))
    first = torch.ones(4, 3, dtype=torch.bool)
    last = torch.zeros(2, 4, dtype=torch.bool)
    last[0, 0] = True
    eff = Masks({"0.weight": first, "2.weight": last}, "kernel").effective(net, Unit("2", 0))
    assert eff["0.weight"].any(1).nonzero().squeeze(1).tolist() == useful
    assert eff["2.weight"].equal(last)
