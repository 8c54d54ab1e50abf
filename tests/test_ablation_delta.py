"""Ablation's evaluations from the change alone (polyprune._ablation.delta): on integer-valued
weights and images every activation is exact, so the chained path must reach the very decisions,
effects and objectives of running the graph on every candidate's images."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import polyprune as pp
import polyprune._ablation as ablation_core
from polyprune._ablation import ablate, chained
from polyprune._ablation.effects import removal_effects
from polyprune._cs.loss import both, preserve
from polyprune._unit_io import placed


class Plain(nn.Module):
    """A chain: conv, in-place ReLU, max-pool, conv, ReLU, conv (the unit's), ReLU."""

    def __init__(self, norm: bool = False, same: bool = False) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        # padding "same": the change goes through a grouped conv, on the whole map
        self.c1 = nn.Conv2d(4, 5, 3, padding="same" if same else 1)
        self.c2 = nn.Conv2d(5, 3, 3, padding=1)
        # a per-channel op between convs: the change goes over every channel from there
        self.norm = nn.BatchNorm2d(5) if norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)  # must not change the cached outputs

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(self.relu(self.c0(x)), 2)
        h = self.norm(F.relu(self.c1(h)))
        return F.relu(self.c2(h))


def integer(model: nn.Module) -> nn.Module:
    """Weights and biases in {-1, 0, 1}, norm statistics exact in binary."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape, generator=g).float())
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randint(-2, 3, m.running_mean.shape, generator=g))
                m.running_var.fill_(4.0 - m.eps)  # sqrt(var + eps) = 2: exact
    return model.eval()


def images(n: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.randint(0, 3, (n, 2, 8, 8), generator=g).float(), torch.arange(n) % 2 == 0


def plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn the chained path off: every evaluation runs the graph."""

    class Off:
        ok = False

        def __init__(self, *args: object) -> None:
            pass

    monkeypatch.setattr(ablation_core, "Chain", Off)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the evaluations on the chained path (the objective now, or candidates)."""
    calls: list[int] = []
    real: Callable[..., list[list[Tensor]]] = ablation_core._Ablator._chained

    def spy(self: ablation_core._Ablator) -> list[list[Tensor]]:
        calls.append(1)
        return real(self)

    monkeypatch.setattr(ablation_core._Ablator, "_chained", spy)
    real_trial = chained.trial

    def trial(run: ablation_core._Ablator) -> Tensor | None:
        a = real_trial(run)
        calls.append(2 if a is not None else 0)  # 2: the objective from a change of state
        return a

    monkeypatch.setattr(chained, "trial", trial)
    return calls


def prefixes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the windows the sequential rule evaluates on the chained path."""
    windows: list[int] = []
    real: Callable[..., Tensor] = chained.prefixes

    def spy(run: ablation_core._Ablator, *args: object) -> Tensor:
        windows.append(1)
        return real(run, *args)

    monkeypatch.setattr(chained, "prefixes", spy)
    return windows


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("norm", [False, True, "same"])
@pytest.mark.parametrize("max_batch", [16, 10_000])  # one candidate per pass, or many
@pytest.mark.parametrize("position", [None, (0, 3)])  # the center; a corner: padding read
@pytest.mark.parametrize("sequential", [False, True])  # ACDC's rule: prefixes of a window
def test_chained_ablation_decides_exactly_as_running_the_graph(
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    norm: bool | str,
    max_batch: int,
    position: tuple[int, int] | None,
    sequential: bool,
) -> None:
    model = integer(Plain(norm is True, norm == "same"))
    x, members = images()
    unit = placed(model, pp.Unit("c2", 1, position), x)
    runs = []
    for on in (True, False):  # the chained path, then running the graph
        with monkeypatch.context() as m:
            if on:
                calls = counting(m)
                windows = prefixes(m)
            else:
                plain_path(m)
            runs.append(ablate(model, unit, x, members, tau=0.05, objective=both,
                               ablation=mode, max_batch=max_batch,
                               sequential=sequential, budget=0.5))  # fmt: skip
        if on:
            assert 1 in calls  # the on path ran
            if sequential:  # every window of candidates from the changes alone
                assert windows
            else:
                assert 2 in calls or max_batch > 16  # one at a time: states change by trials
    same_run(*runs)


def same_run(fast: ablation_core.AblationResult, slow: ablation_core.AblationResult) -> None:
    """The very decisions, effects and objectives, and a real mix of decisions."""
    assert fast.history["objective"] == slow.history["objective"]
    assert fast.history["evaluations"] == slow.history["evaluations"]
    for name in slow.kernels:
        assert torch.equal(fast.kernels[name], slow.kernels[name]), name
        torch.testing.assert_close(fast.effects[name], slow.effects[name], rtol=0, atol=0)
    kept = sum(int(k.sum()) for k in fast.kernels.values())
    assert 0 < kept < sum(k.numel() for k in fast.kernels.values())


def test_chained_removal_effects_equal_running_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    model = integer(Plain(True))
    x, members = images()
    unit = placed(model, pp.Unit("c2", 0), x)
    g = torch.Generator().manual_seed(5)
    kept = {n: torch.rand(p.shape[:2], generator=g) > 0.3 for n, p in model.named_parameters()
            if n.endswith("weight") and p.dim() == 4}  # fmt: skip
    with monkeypatch.context() as m:
        calls = counting(m)
        fast = removal_effects(model, unit, x, members, kept, objective=preserve, max_batch=24)
    assert calls
    with monkeypatch.context() as m:
        plain_path(m)
        slow = removal_effects(model, unit, x, members, kept, objective=preserve, max_batch=24)
    assert fast[0] == slow[0]
    for name in slow[1]:
        torch.testing.assert_close(fast[1][name], slow[1][name], rtol=0, atol=0)
    assert any(bool((e != 0).any()) for e in fast[1].values())
