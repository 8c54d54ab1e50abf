"""Ablation keeps each masked weight until its kept kernels change (polyprune._ablation.weights):
on integer-valued weights and images every activation is exact, so with the products kept the
run must reach the very decisions, effects and objectives of computing them at every read."""

from __future__ import annotations

import pytest
import torch
from test_ablation_delta import Plain, images, integer, plain_path, same_run

import polyprune as pp
import polyprune._ablation as ablation_core
from polyprune._ablation import ablate
from polyprune._ablation.marginal import marginal_effects
from polyprune._ablation.weights import MaskedWeight
from polyprune._cs.loss import both
from polyprune._unit_io import placed

REAL = MaskedWeight.forward


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("chained", [True, False])  # from the change alone, or the graph
@pytest.mark.parametrize("max_batch", [16, 10_000])
@pytest.mark.parametrize("sequential", [False, True])
def test_kept_weights_decide_exactly_as_computing_them_at_every_read(
    monkeypatch: pytest.MonkeyPatch, mode: str, chained: bool, max_batch: int, sequential: bool
) -> None:
    model = integer(Plain(True))
    x, members = images()
    unit = placed(model, pp.Unit("c2", 1), x)
    runs, products = [], []
    for cached in (True, False):
        with monkeypatch.context() as m:
            m.setattr(ablation_core._Ablator, "cache_weights", cached)
            if not chained:
                plain_path(m)
            made: list[int] = []

            def spy(self: MaskedWeight, weight: torch.Tensor, made: list[int] = made):
                kept = self._kept
                out = REAL(self, weight)
                made.append(int(self._kept is None or self._kept is not kept))  # 1: computed
                return out

            m.setattr(MaskedWeight, "forward", spy)
            runs.append(ablate(model, unit, x, members, tau=0.05, objective=both,
                               ablation=mode, max_batch=max_batch, sequential=sequential,
                               budget=0.5))  # fmt: skip
            products.append(made)
    same_run(*runs)
    # the same reads; kept, fewer products are computed
    assert len(products[0]) == len(products[1])
    assert all(products[1]) and sum(products[0]) < len(products[0])


def test_kept_weights_give_the_same_marginal_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    model = integer(Plain(True))
    x, members = images()
    unit = placed(model, pp.Unit("c2", 1), x)
    found = ablate(model, unit, x, members, tau=0.05, objective=both, budget=0.5)
    effects = []
    for cached in (True, False):
        monkeypatch.setattr(ablation_core._Ablator, "cache_weights", cached)
        effects.append(marginal_effects(model, unit, x, members, found.kernels, objective=both))
    for name in effects[1]:
        torch.testing.assert_close(effects[0][name], effects[1][name], rtol=0, atol=0)
