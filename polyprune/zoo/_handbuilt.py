"""A tiny hand-built network whose unit depends on 15 known kernels, exactly."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._graph.regions import unit_regions
from ..masks import Masks
from ..targets import Unit

__all__ = ["HandBuilt", "handbuilt"]

# Unit ("4", 0) reads conv2's channels 1 and 4; those read conv1's channels {0, 2} and {2, 5};
# those read every input channel.
_KNOWN: dict[str, set[tuple[int, int]]] = {
    "4.weight": {(0, 1), (0, 4)},
    "2.weight": {(1, 0), (1, 2), (4, 2), (4, 5)},
    "0.weight": {(o, i) for o in (0, 2, 5) for i in range(3)},
}


class HandBuilt(NamedTuple):
    """What :func:`handbuilt` returns."""

    model: nn.Sequential
    unit: Unit
    images: Tensor
    truth: Masks


def _conv(net: nn.Module, weight: str) -> nn.Conv2d:
    module = net.get_submodule(weight.rpartition(".")[0])
    assert isinstance(module, nn.Conv2d)
    return module


def handbuilt() -> HandBuilt:
    """Three 3×3 convolutions whose unit ``("4", 0)`` depends exactly on 15 known kernels.

    The known kernels (``truth``, kernel granularity, with the region of the 96 kernels that can
    reach the unit) are positive, and with the positive ``images`` (6 of 3×11×11) every path
    through them is active; every kernel that would add a path to the unit is zero, and every
    other kernel is random with a *larger* magnitude, so weight magnitude points away from the
    circuit. Gradient scorers must score exactly the known kernels and nothing else.
    Deterministic; the global random state is left untouched.

    Examples
    --------
    >>> from polyprune import zoo
    >>> net = zoo.handbuilt()
    >>> net.unit, net.truth.kept_weights() // 9, net.truth.total_weights() // 9
    (Unit(layer='4', channel=0, position=None), 15, 96)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)
        ).eval()
        with torch.no_grad():
            for name, known in _KNOWN.items():
                w = _conv(net, name).weight
                w.normal_(0, 1.5)
                rows = {o for o, _ in known}
                for o, i in ((o, i) for o in range(w.shape[0]) for i in range(w.shape[1])):
                    if (o, i) in known:
                        w[o, i] = torch.rand_like(w[o, i]) * 0.5 + 0.05
                    elif o in rows and name != "0.weight":
                        w[o, i] = 0.0
            for m in net:
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    m.bias.abs_()
        images = torch.rand(6, 3, 11, 11)
    unit = Unit("4", 0)
    shapes, regions = unit_regions(net, unit.layer, unit.channel, "kernel")
    truth = {}
    for name, region in regions.items():
        mask = torch.zeros_like(region)
        for o, i in _KNOWN[name]:
            mask[o, i] = True
        truth[name] = mask
    return HandBuilt(
        net, unit, images, Masks(truth, "kernel", weight_shapes=shapes, regions=regions, unit=unit)
    )
