"""Ablation's drift budget: ACDC's rule alone lets each of many kernels cost up to ``tau``, so a
wide layer walks the objective far from where it started; the budget bounds the walk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polyprune as pp
from polyprune.ablation import DEFAULT_BUDGET, Ablation

WIDTH = 100


def wide() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A unit that sums ``WIDTH`` copies of one input (integer weights and inputs: exact).

    With ``k`` of its kernels removed the unit is ``(WIDTH − k) · x``, so the ``preserve``
    objective is ``(k / WIDTH)²`` and removing one more costs ``(2k + 1) / WIDTH²``: each of the
    first removals costs far less than the objective they add up to."""
    conv = nn.Conv2d(WIDTH, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    model = nn.Sequential(conv).eval()
    x = torch.arange(1.0, 7.0).reshape(6, 1, 1, 1).expand(6, WIDTH, 1, 1).contiguous()
    return model, x, torch.arange(6) < 3


def fit(tau: float, budget: float, sequential: bool) -> pp.methods.Subnetwork:
    model, x, y = wide()
    return pp.fit_subnetwork(model, pp.Unit("0", 0), x, y,
                             Ablation(tau=tau, budget=budget, loss="preserve",
                                      sequential=sequential, progress=False),
                             progress=False)  # fmt: skip


def kept(sub: pp.methods.Subnetwork) -> int:
    return int(sub.masks["0.weight"].sum())


def test_acdc_alone_drifts_and_the_budget_stops_it() -> None:
    """τ = 0.01: ACDC alone removes a kernel while ``(2k + 1) / 100² ≤ 0.01``, 50 of them, and
    ends at objective 0.25 (1/4 of the unit gone); with budget 0.05 it stops at the last ``k``
    with ``(k / 100)² ≤ 0.05``: 22 removed, objective 0.0484."""
    acdc = fit(0.01, float("inf"), sequential=True)
    assert kept(acdc) == WIDTH - 50
    assert acdc.history["objective"][-1] == pytest.approx(0.25)
    held = fit(0.01, 0.05, sequential=True)
    assert kept(held) == WIDTH - 22
    assert held.history["objective"][-1] == pytest.approx(0.0484)
    assert held.state is not None and held.state["budget"] == 0.05


def test_batched_rule_keeps_to_the_budget() -> None:
    """The default (batched) rule: its objective ends within the budget of the lowest reached
    (0 here, the dense network), and without a budget it drifts past it."""
    held = fit(0.01, 0.05, sequential=False)
    assert held.history["objective"][-1] <= 0.05
    assert kept(held) >= WIDTH - 22
    assert fit(0.01, float("inf"), sequential=False).history["objective"][-1] > 0.05


def test_budget_option() -> None:
    assert Ablation().budget == DEFAULT_BUDGET
    assert "budget" not in repr(Ablation())
    assert "budget=0.5" in repr(Ablation(budget=0.5))
    assert Ablation(budget=float("inf")).budget == float("inf")
    for bad in (-1.0, True, "1", float("nan")):
        with pytest.raises(ValueError, match="budget must be"):
            Ablation(budget=bad)  # type: ignore[arg-type]


def test_budget_guided_batches_cost_fewer_trials() -> None:
    """Where the budget binds, the single effects guide the batch: on the wide unit (one batch
    of 100 candidates, each alone costing ``1 / 100²``, all allowed) the rule tries the longest
    prefix whose summed effects fit the budget left and halves it on failure: 100, 50, 25
    fail, 12 taken (objective 0.0144); 88, 44, 22, 11 fail, 5 taken (0.0289); 83, 41, 20, 10
    fail, 5 taken (0.0484); 16, 8, 4, 2, 1 fail, and each of the 77 left fails alone: 96
    trials, the same 22 removals as ACDC's sequential rule. Blind halving (each half retried
    down to single kernels) needed 163 trials for the same answer."""
    held = fit(0.01, 0.05, sequential=False)
    assert kept(held) == WIDTH - 22
    assert held.history["objective"][-1] == pytest.approx(0.0484)
    # evaluations: the objective now, the batch as a whole, each candidate alone, the trials
    assert held.history["evaluations"][-1] - 2 - WIDTH == 96
