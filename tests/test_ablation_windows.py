"""The chained path on windows (polyprune._ablation.windows): each map after the ablated layer is
computed only where the unit reads it. On integer-valued weights and images every activation is
exact, so the decisions must be those of running the graph; and the windows must be in use."""

from __future__ import annotations

import pytest
import torch
from test_ablation_delta import integer, plain_path, same_run
from torch import Tensor, nn

import polyprune as pp
import polyprune._ablation as ablation_core
from polyprune._ablation import ablate
from polyprune._ablation.steps import Step
from polyprune._ablation.windows import Window, conv_reads, step_reads
from polyprune._cs.loss import both
from polyprune._unit_io import placed


class Pooled(nn.Module):
    """conv, ReLU, a max-pool of any padding / ceil mode, conv, ReLU, conv (the unit's)."""

    def __init__(self, padding: int, ceil: bool) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, padding=padding, ceil_mode=ceil)
        self.c1 = nn.Conv2d(4, 5, 3, padding=1)
        self.c2 = nn.Conv2d(5, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(torch.relu(self.c0(x)))
        return self.c2(torch.relu(self.c1(h)))


def images(n: int = 8, size: int = 12) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(6)
    return torch.randint(0, 3, (n, 2, size, size), generator=g).float(), torch.arange(n) % 2 == 0


def plan(
    model: nn.Module, unit: pp.Unit, x: Tensor, layer: str
) -> tuple[list[Window | None], list[str | None]]:
    """The windows and modes of the chain after ``layer`` (one ablation run's state)."""
    run = ablation_core._Ablator(model, unit, x, torch.ones(len(x), dtype=torch.bool), both,
                                 False, 256, 2048)  # fmt: skip
    with run.masked():
        run.start(layer)
        run.current()
        assert run._chain is not None and run._chain._plan is not None
        return run._chain._plan[1], run._chain._plan[2]


def both_paths(
    monkeypatch: pytest.MonkeyPatch, model: nn.Module, unit: pp.Unit, x: Tensor,
    members: Tensor, sequential: bool = False,
) -> tuple[ablation_core.AblationResult, ablation_core.AblationResult]:  # fmt: skip
    """One ablation run on the chained path (windows), and one running the graph."""
    runs = []
    for on in (True, False):
        with monkeypatch.context() as m:
            if not on:
                plain_path(m)
            runs.append(ablate(model, unit, x, members, tau=0.05, objective=both,
                               max_batch=10_000, sequential=sequential, budget=0.5))  # fmt: skip
    return runs[0], runs[1]


@pytest.mark.parametrize(("padding", "ceil"), [(0, False), (0, True), (1, False)])
@pytest.mark.parametrize("position", [None, (0, 4)])
@pytest.mark.parametrize("sequential", [False, True])
def test_windowed_chain_decides_exactly_as_running_the_graph(
    monkeypatch: pytest.MonkeyPatch,
    padding: int,
    ceil: bool,
    position: tuple[int, int] | None,
    sequential: bool,
) -> None:
    model = integer(Pooled(padding, ceil))
    x, members = images()
    unit = placed(model, pp.Unit("c2", 1, position), x)
    same_run(*both_paths(monkeypatch, model, unit, x, members, sequential))


def test_windows_are_what_the_unit_reads() -> None:
    # 12 px: c0 12×12, pool (no padding) 5×5, c1 5×5, c2 5×5; the unit at (0, 4) reads c1's
    # output rows 0–1, cols 3–4; c1 reads the pool's rows 0–2, cols 2–4; the pool reads c0's
    # rows 0–6, cols 4–10: every map on a window smaller than itself
    model = integer(Pooled(0, False))
    x, _ = images()
    unit = placed(model, pp.Unit("c2", 1, (0, 4)), x)
    wins, modes = plan(model, unit, x, "c0")
    assert wins[:4] == [[(0, 6), (4, 10)], [(0, 6), (4, 10)], [(0, 2), (2, 4)],
                        [(0, 1), (3, 4)]]  # fmt: skip
    assert modes[:3] == ["pointwise", "valid", "conv"]
    # a pool with padding of its own: no window through it, so none before it either; the
    # maps after it are still on windows
    wins, modes = plan(integer(Pooled(1, False)), unit, x, "c0")
    assert wins[:2] == [None, None] and wins[2] is not None and modes[1] is None


def test_step_reads_refuses_what_it_cannot_window() -> None:
    x = torch.rand(1, 3, 9, 9)
    conv = nn.Conv2d(3, 3, 3, padding="same")
    assert step_reads(Step(None, "conv", conv), nn.Sequential(), (), {}, x, x,  # type: ignore[arg-type]
                      [(4, 4), (4, 4)]) is None  # fmt: skip
    # a strided conv reads its taps, clipped to the map (the rest is padding)
    strided = nn.Conv2d(3, 3, 3, stride=2, padding=1)
    assert conv_reads(strided, [(0, 1), (3, 4)], (9, 9)) == [(0, 3), (5, 8)]


def test_a_hook_of_the_users_on_the_ablated_layer_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the layer's output is computed on a window only where nothing but ablation's own hook
    # is on it: a user's hook (here +1 on every output) must change the result as it does
    # when the graph runs
    model = integer(Pooled(0, False))
    x, members = images()
    unit = placed(model, pp.Unit("c2", 1, (0, 4)), x)
    handle = model.get_submodule("c0").register_forward_hook(lambda m, args, out: out + 1)
    try:
        chained, graph = both_paths(monkeypatch, model, unit, x, members)
        same_run(chained, graph)
    finally:
        handle.remove()
    plain = ablate(model, unit, x, members, tau=0.05, objective=both, max_batch=10_000,
                   budget=0.5)  # fmt: skip
    assert plain.history["objective"] != chained.history["objective"]  # the hook mattered
