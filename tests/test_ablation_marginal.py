"""Ablation's final scores (``Ablation(scores="final")``, polyprune._ablation.marginal): each
kernel's marginal effect in the subnetwork found equals removing (kept) or putting back (removed)
that one kernel by hand; the hand-built circuit scores a perfect ROC; the model comes back as
found."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_restored, snapshot
from test_ablation import Skip, acdc_reference, data
from torch import nn

import polyprune as pp
from polyprune import zoo
from polyprune._ablation.marginal import marginal_effects
from polyprune._cs.loss import both, loss_context
from polyprune._unit_io import placed, unit_activations
from polyprune.ablation import DEFAULT_BUDGET, Ablation


@pytest.mark.parametrize("max_batch", [12, 10_000])  # one candidate per forward pass, or all
def test_marginal_effects_equal_removing_or_putting_back_one_kernel_by_hand(
    max_batch: int,
) -> None:
    model = Skip().eval()  # c1 does not dominate the unit: the images-repeated path too
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    regions = pp.scoring.SNIP().score(model, x[:1], unit).regions
    g = torch.Generator().manual_seed(3)
    kept = {n: (torch.rand(r.shape, generator=g) < 0.5) | ~r for n, r in regions.items()}
    before = snapshot(model)
    got = marginal_effects(model, unit, x, y, kept, objective=both, max_batch=max_batch)
    assert_restored(model, before)
    dense = unit_activations(model, unit, x)
    ctx = loss_context(dense, y, False, False)

    def loss(kernels: dict[str, torch.Tensor]) -> float:
        a = unit_activations(model, unit, x, pp.Masks(kernels, "kernel"))
        return float(both(a, dense, y, torch.zeros(()), ctx))

    base = loss(kept)
    flips = {True: 0, False: 0}
    for name, region in regions.items():
        for o, i in region.nonzero().tolist():
            other = {n: k.clone() for n, k in kept.items()}
            was = bool(kept[name][o, i])
            other[name][o, i] = not was
            want = loss(other) - base if was else base - loss(other)
            assert float(got[name][o, i]) == pytest.approx(want, rel=1e-4, abs=1e-5)
            flips[was] += 1
        assert bool((got[name][~region] == 0).all())
    assert flips[True] > 0 and flips[False] > 0  # both kinds were checked


def test_final_scores_rank_the_handbuilt_circuit_first_and_leave_the_masks_alone() -> None:
    net = zoo.handbuilt()
    members = torch.arange(6) < 3
    before = snapshot(net.model)
    visit, final = (
        pp.fit_subnetwork(net.model, net.unit, net.images, members,
                          Ablation(loss="preserve", scores=scores, progress=False))
        for scores in ("visit", "final")
    )  # fmt: skip
    assert_restored(net.model, before)
    assert visit.masks.iou(final.masks) == 1.0  # the scores do not change what is kept
    assert final.state is not None
    found = pp.evaluation.circuit_scores(final.masks, net.truth, final.state["effects"])
    assert (found.precision, found.recall, found.roc_auc) == (1.0, 1.0, 1.0)
    for name, truth in net.truth.items():  # kept: removing it costs; off the circuit: 0 gain
        inside, e = net.truth.regions[name], final.state["effects"][name]
        assert bool((e[truth & inside] > 0).all()) and bool((e[~truth & inside] <= 0).all())


def test_bad_scores_option_is_refused() -> None:
    with pytest.raises(ValueError, match="scores must be 'visit' or 'final'"):
        Ablation(scores="both")  # type: ignore[arg-type]
    assert "scores='final'" in repr(Ablation(scores="final"))
    assert "scores" not in repr(Ablation())


def test_sequential_is_acdc_whatever_the_batch_size() -> None:
    """``sequential=True`` decides one candidate per forward pass even where a forward pass
    could hold every candidate (4 images per batch, 2048 images per pass by default): the
    kept kernels are ACDC's, by a plain loop."""
    model = Skip().eval()
    x, y = data()
    unit = placed(model, pp.Unit("c2", 1), x)
    want = acdc_reference(model, unit, x, y, 0.02, DEFAULT_BUDGET)
    sub = pp.fit_subnetwork(model, pp.Unit("c2", 1), x, y,
                            Ablation(tau=0.02, sequential=True, progress=False),
                            batch_size=4)  # fmt: skip
    assert sub.raw_masks is not None
    for name, kept in want.items():
        assert torch.equal(sub.raw_masks[name] | ~sub.raw_masks.regions[name], kept), name
    with pytest.raises(ValueError, match="sequential must be True or False"):
        Ablation(sequential=1)  # type: ignore[arg-type]
    assert "sequential=True" in repr(Ablation(sequential=True))


def chain() -> tuple[nn.Module, pp.Unit, torch.Tensor, torch.Tensor]:
    """A plain conv chain, 8 channels wide: removals come in runs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Conv2d(8, 2, 3)).eval()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, 9, 9, generator=g), torch.arange(12) % 3 == 0
    return model, placed(model, pp.Unit("4", 1), x), x, y


@pytest.mark.parametrize(("net", "ablation"), [("skip", "zero"), ("skip", "mean"),
                                               ("chain", "zero")])  # fmt: skip
def test_sequential_prefix_passes_decide_as_one_candidate_per_forward(
    net: str, ablation: str
) -> None:
    """Windows of candidates in one pass (every prefix removed), or one candidate per pass:
    the same kernels and effects; on the chain, in fewer forward passes."""
    from polyprune._ablation import ablate

    if net == "skip":
        model: nn.Module = Skip().eval()
        x, y = data()
        unit = placed(model, pp.Unit("c2", 1), x)
    else:
        model, unit, x, y = chain()
    calls = {"n": 0}  # forward passes: the unit's layer runs once per pass

    def count(m: nn.Module, a: object, out: torch.Tensor) -> None:
        calls["n"] += 1

    handle = model.get_submodule(unit.layer).register_forward_hook(count)
    before = snapshot(model)
    try:
        prefix = ablate(model, unit, x, y, tau=0.05, ablation=ablation, max_batch=10_000,
                        sequential=True)  # fmt: skip
        assert_restored(model, before)
        passes = calls["n"]
        single = ablate(model, unit, x, y, tau=0.05, ablation=ablation, max_batch=12)
    finally:
        handle.remove()
    # the data hold no near-tie: every decision is at least 1e-4 from tau (float data, so a
    # tie within rounding could decide differently on another CPU; measured margins 2e-4–5e-3)
    effects = torch.cat([e[e != 0] for e in single.effects.values()])
    assert float((effects - 0.05).abs().min()) > 1e-4, "near-tie in the test data: change seed"
    for name, kept in single.kernels.items():
        assert torch.equal(prefix.kernels[name], kept), name
        torch.testing.assert_close(prefix.effects[name], single.effects[name],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
    if net == "chain":
        assert passes < 0.8 * (calls["n"] - passes)


def test_public_marginal_effects_score_any_subnetwork_as_final_scores_do() -> None:
    # pp.ablation.marginal_effects on ablation's own subnetwork gives its final scores, and on
    # any kernel masks; the model comes back as found; bad masks and objectives are refused
    net = zoo.handbuilt()
    y = torch.arange(6) < 3
    sub = pp.fit_subnetwork(net.model, net.unit, net.images, y,
                            Ablation(loss="preserve", scores="final", progress=False))  # fmt: skip
    before = snapshot(net.model)
    got = pp.ablation.marginal_effects(net.model, net.unit, net.images, y, sub.masks,
                                       loss="preserve")  # fmt: skip
    assert_restored(net.model, before)
    assert sub.state is not None and set(got) == set(sub.state["effects"])
    for name, effects in got.items():
        torch.testing.assert_close(effects, sub.state["effects"][name], rtol=0, atol=1e-6)
    masks = pp.Masks({n: torch.ones(s, dtype=torch.bool) for n, s in
                      net.truth.weight_shapes.items()}, "weight")  # fmt: skip
    with pytest.raises(ValueError, match="kernel granularity"):
        pp.ablation.marginal_effects(net.model, net.unit, net.images, y, masks)
    with pytest.raises(ValueError, match="nope"):
        pp.ablation.marginal_effects(net.model, net.unit, net.images, y, net.truth, loss="nope")
