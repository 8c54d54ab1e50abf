"""ACDC-style ablation (private core, polyprune._ablation): exact on the hand-built network,
batched evaluations equal one-at-a-time ones, the sequential rule matches a plain reference, and
the model comes back as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_restored, snapshot
from torch import Tensor, nn

import polyprune as pp
from polyprune import zoo
from polyprune._ablation import ablate
from polyprune._ablation.effects import removal_effects
from polyprune._cs.loss import both, loss_context, preserve
from polyprune._unit_io import placed, unit_activations


class Skip(nn.Module):
    """A residual block: ``c1`` does not dominate the unit (the skip goes around it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c0 = nn.Conv2d(3, 4, 3, padding=1)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.c0(x))
        return self.c2(F.relu(self.c1(h)) + h)


def data(n: int = 12) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 7, 7, generator=g), torch.arange(n) % 3 == 0


def handbuilt_masks(net: zoo.HandBuilt, kernels: dict[str, Tensor]) -> pp.Masks:
    t = net.truth
    return pp.Masks(kernels, "kernel", weight_shapes=t.weight_shapes, regions=t.regions,
                    unit=net.unit).effective(net.model)  # fmt: skip


@pytest.mark.parametrize("max_batch", [6, 10_000])  # one candidate per forward, or all
def test_finds_the_handbuilt_circuit_exactly(max_batch: int) -> None:
    net = zoo.handbuilt()
    members = torch.arange(6) < 3
    unit = placed(net.model, net.unit, net.images)
    found = ablate(net.model, unit, net.images, members, tau=1e-3, objective=preserve,
                   max_batch=max_batch)  # fmt: skip
    scores = pp.evaluation.circuit_scores(handbuilt_masks(net, found.kernels), net.truth)
    assert (scores.precision, scores.recall) == (1.0, 1.0)
    # effects: every circuit kernel was kept with an effect above tau; the rest at most tau
    for name, truth in net.truth.items():
        inside = net.truth.regions[name]
        assert bool((found.effects[name][truth & inside] > 1e-3).all())
        assert bool((found.effects[name][~truth & inside] <= 1e-3).all())


def reference_effects(model: nn.Module, unit: pp.Unit, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Zero each kernel of the region alone, by hand: the change of the ``both`` objective."""
    dense = unit_activations(model, unit, x)
    ctx = loss_context(dense, y, False, False)
    reach = pp.scoring.SNIP().score(model, x[:1], unit)  # the weight shapes and regions
    shapes, regions = reach.weight_shapes, reach.regions
    base = float(both(dense, dense, y, torch.zeros(()), ctx))
    out = {}
    for name, region in regions.items():
        eff = torch.zeros(region.shape)
        for o, i in region.nonzero().tolist():
            kernels = {n: torch.ones(r.shape, dtype=torch.bool) for n, r in regions.items()}
            kernels[name][o, i] = False
            masks = pp.Masks(kernels, "kernel", weight_shapes=shapes)
            a = unit_activations(model, unit, x, masks)
            eff[o, i] = float(both(a, dense, y, torch.zeros(()), ctx)) - base
        out[name] = eff
    return out


@pytest.mark.parametrize("max_batch", [12, 10_000])
def test_batched_removal_effects_equal_removing_one_kernel_at_a_time(max_batch: int) -> None:
    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    before = snapshot(model)
    _, effects = removal_effects(model, unit, x, y, {}, max_batch=max_batch)
    assert_restored(model, before)
    want = reference_effects(model, unit, x, y)
    for name, w in want.items():
        torch.testing.assert_close(effects[name], w, rtol=1e-4, atol=1e-5)


def acdc_reference(model: nn.Module, unit: pp.Unit, x: Tensor, y: Tensor, tau: float,
                   budget: float = float("inf")) -> dict[str, Tensor]:  # fmt: skip
    """ACDC's sequential rule with the ``both`` objective, by a plain loop over masked forward
    passes: the kept kernels per weight of ``Skip``; with a ``budget``, a removal must also leave
    the objective within ``budget`` of the lowest reached."""
    dense = unit_activations(model, unit, x)
    ctx = loss_context(dense, y, False, False)
    regions = pp.scoring.SNIP().score(model, x[:1], unit).regions
    kept = {n: torch.ones(r.shape, dtype=torch.bool) for n, r in regions.items()}

    def loss() -> float:
        a = unit_activations(model, unit, x, pp.Masks(kept, "kernel"))
        return float(both(a, dense, y, torch.zeros(()), ctx))

    now = best = loss()
    for name in ("c2.weight", "c1.weight", "c0.weight"):  # from the unit back
        on_path = pp.Masks(kept, "kernel", regions=regions, unit=unit).effective(model)[name]
        kept[name] &= on_path | ~regions[name]
        for o, i in (on_path & regions[name]).nonzero().tolist():
            kept[name][o, i] = False
            trial = loss()
            if trial - now <= tau and trial - best <= budget:
                now, best = trial, min(best, trial)
            else:
                kept[name][o, i] = True
    return kept


def test_one_at_a_time_is_acdc_and_leaves_the_model_as_found() -> None:
    """With one candidate per forward the decisions are ACDC's sequential rule, checked
    against a plain loop over Masks.applied."""
    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    tau = 0.02
    before = snapshot(model)
    found = ablate(model, unit, x, y, tau=tau, max_batch=12)
    assert_restored(model, before)
    kept = acdc_reference(model, unit, x, y, tau)
    regions = pp.scoring.SNIP().score(model, x[:1], unit).regions
    for name in kept:
        assert torch.equal(found.kernels[name], kept[name]), name
    assert (
        0
        < sum(int((found.kernels[n] & regions[n]).sum()) for n in kept)
        < sum(int(r.sum()) for r in regions.values())
    )  # it removed some kernels and kept some


def test_mean_ablation_runs_and_bad_options_are_refused() -> None:
    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    before = snapshot(model)
    found = ablate(model, unit, x, y, tau=0.02, ablation="mean")
    assert_restored(model, before)
    assert found.history["objective"] and len(found.history["kept"]) == 3
    with pytest.raises(ValueError, match="ablation must be"):
        ablate(model, unit, x, y, tau=0.02, ablation="resample")
    with pytest.raises(ValueError, match="tau must be"):
        ablate(model, unit, x, y, tau=-1.0)


@pytest.mark.parametrize("layer", ["c0", "c1", "c2"])  # c1: a skip goes around it
def test_mean_ablation_replaces_a_kernel_by_its_mean_contribution(layer: str) -> None:
    from polyprune._ablation import _Ablator

    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    run = _Ablator(model, unit, x, y, both, True, 4, 64)
    module = model.get_submodule(layer)
    assert isinstance(module, nn.Conv2d)
    rows, cols = torch.tensor([0, 1]), torch.tensor([1, 0])
    run._expand = layer != "c1"
    with run.masked():
        got = run.try_removals(f"{layer}.weight", rows, cols)
    for k in range(2):
        o, i = int(rows[k]), int(cols[k])
        with torch.no_grad():  # the kernel's contribution map on every image, by hand
            single = torch.zeros_like(module.weight)
            single[o, i] = module.weight[o, i]
            inputs: list[Tensor] = []
            handle = module.register_forward_hook(
                lambda m, a, out, inputs=inputs: inputs.append(a[0])
            )
            model(x)
            handle.remove()
            mean = F.conv2d(inputs[0], single, None, module.stride, module.padding)[:, o].mean(0)
        kept = {n: torch.ones(r.shape, dtype=torch.bool) for n, r in run.regions.items()}
        kept[f"{layer}.weight"][o, i] = False

        def add_mean(m, a, out, o=o, mean=mean):
            out = out.clone()
            out[:, o] += mean
            return out

        handle = module.register_forward_hook(add_mean)
        try:
            a = unit_activations(model, unit, x, pp.Masks(kept, "kernel"))
        finally:
            handle.remove()
        want = float(both(a, run.dense, run.y, torch.zeros(()), run.ctx))
        assert float(got[k]) == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_a_batch_that_can_go_together_costs_one_evaluation() -> None:
    """With every removal allowed (a huge tau) each layer's single batch goes in one joint
    evaluation, not one per candidate; the effects are each kernel's share of the change."""
    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    found = ablate(model, unit, x, y, tau=1e9, max_batch=10_000)
    regions = pp.scoring.SNIP().score(model, x[:1], unit).regions
    assert found.history["kept"][0] == 0  # the unit's layer: all 4 kernels in one go
    assert found.history["evaluations"][0] == 2  # the objective now, then all of them removed
    share = found.effects["c2.weight"][regions["c2.weight"]]
    assert bool((share == share[0]).all())


@pytest.mark.parametrize("max_batch", [48, 10_000])
def test_batched_decisions_move_the_objective_by_at_most_tau_per_removal(max_batch: int) -> None:
    """Batches taken together, or split in halves when together they matter: every step that
    removes m kernels moves the objective by at most m · tau, so the whole run by removed · tau;
    and every kernel it kept, removed alone at the end, would move it by more than tau... or
    was kept by an earlier state; at least, none of them is free."""
    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    tau = 0.02
    found = ablate(model, unit, x, y, tau=tau, max_batch=max_batch)
    dense = unit_activations(model, unit, x)
    ctx = loss_context(dense, y, False, False)
    base = float(both(dense, dense, y, torch.zeros(()), ctx))
    regions = pp.scoring.SNIP().score(model, x[:1], unit).regions
    removed = sum(int((~found.kernels[n] & r).sum()) for n, r in regions.items())
    assert 0 < removed < sum(int(r.sum()) for r in regions.values())
    assert found.history["objective"][-1] - base <= tau * removed + 1e-6


def test_evaluations_start_from_a_dominating_layers_cached_input() -> None:
    from polyprune._ablation.graph import FromLayer

    model = Skip().eval()
    x, _ = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    for layer in ("c0", "c1", "c2"):  # c1: the skip reads c1's input itself, nothing before
        partial = FromLayer(model, unit, layer)
        assert partial.ok
        (cached,) = partial.inputs(model, [x])
        with torch.no_grad():
            torch.testing.assert_close(partial.activation(cached), unit_activations(model, unit, x))
