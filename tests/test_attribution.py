"""Attribution (EAP): on a linear network with integer weights and inputs, each kernel's score is
exactly how much the objective changes when that kernel is removed."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import polyprune as pp
from polyprune.scoring import Attribution, available


def linear_net(seed: int) -> nn.Sequential:
    """Three 3×3 convolutions, no nonlinearity, integer weights in [-2, 2], no bias."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False),
        nn.Conv2d(3, 3, 3, bias=False),
        nn.Conv2d(3, 2, 3, bias=False),
    ).eval()
    with torch.no_grad():
        for m in net:
            assert isinstance(m, nn.Conv2d)
            m.weight.copy_(torch.randint(-2, 3, m.weight.shape, generator=g).float())
    return net


def objective(net: nn.Module, x: Tensor, unit: pp.Unit) -> float:
    with torch.no_grad():
        return float(net(x)[:, unit.channel, 1, 1].sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_are_the_exact_effect_of_removing_each_kernel(seed: int) -> None:
    net = linear_net(seed)
    x = torch.randint(-3, 4, (4, 2, 9, 9), generator=torch.Generator().manual_seed(seed)).float()
    unit = pp.Unit("2", 1, (1, 1))
    scores = Attribution(progress=False).score(net, x, unit)
    full = objective(net, x, unit)
    for layer in range(len(net)):
        name = f"{layer}.weight"
        weight = net.get_parameter(name)
        out_ch, in_ch = weight.shape[:2]
        for o in range(out_ch):
            for i in range(in_ch):
                kept = weight[o, i].clone()
                with torch.no_grad():
                    weight[o, i] = 0
                removed = objective(net, x, unit)
                with torch.no_grad():
                    weight[o, i] = kept
                in_region = bool(scores.regions[name][o, i])
                expect = abs(full - removed) if in_region else 0.0
                assert float(scores[name][o, i]) == expect, (name, o, i)


def test_filter_scores_remove_the_whole_filter() -> None:
    net = linear_net(3)
    x = torch.randint(-3, 4, (3, 2, 9, 9), generator=torch.Generator().manual_seed(3)).float()
    unit = pp.Unit("2", 0, (1, 1))
    scores = Attribution(progress=False).score(net, x, unit, granularity="filter")
    full = objective(net, x, unit)
    for o in range(3):
        kept = net.get_parameter("1.weight")[o].clone()
        with torch.no_grad():
            net.get_parameter("1.weight")[o] = 0
        removed = objective(net, x, unit)
        with torch.no_grad():
            net.get_parameter("1.weight")[o] = kept
        assert float(scores["1.weight"][o]) == abs(full - removed)


def test_registered_and_fits_a_subnetwork() -> None:
    assert "attribution" in available()
    net = pp.zoo.handbuilt()
    sub = pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3, "attribution",
                            keep=0.15)  # fmt: skip
    assert sub.method == "attribution"
    found = pp.evaluation.circuit_scores(sub.masks, net.truth)
    assert found.precision == 1.0 and found.recall == 1.0  # 15 of 96 kernels: the circuit
