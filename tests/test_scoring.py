"""Scorers against independent computations: captum, autograd by hand, explicit loops."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradientXActivation
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from polyprune import Masks, Unit
from polyprune.scoring import FORCE, SNIP, ActGrad, Magnitude, Random, Scorer
from polyprune.targets import Objective

GRANULARITIES = ("weight", "kernel", "filter")


def small_net(seed: int = 0, inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(inplace=inplace), nn.Conv2d(6, 5, 3, stride=2, padding=1),
        nn.ReLU(inplace=inplace), nn.Conv2d(5, 4, 3, padding=1),
    ).eval()  # fmt: skip


def truncated(model: nn.Module, layer: str, unit: Unit, position: tuple[int, int] | None):
    """A forward function for captum: the unit's value per image (N,)."""

    def forward(x: Tensor) -> Tensor:
        out: list[Tensor] = []
        handle = model.get_submodule(layer).register_forward_hook(lambda m, a, o: out.append(o))
        try:
            model(x)
        finally:
            handle.remove()
        y = out[0][:, unit.channel]
        i, j = position if position is not None else ((y.shape[1] - 1) // 2, (y.shape[2] - 1) // 2)
        return y[:, i, j]

    return forward


def captum_filter_scores(model: nn.Module, x: Tensor, unit: Unit, name: str) -> Tensor:
    layer = model.get_submodule(name.rpartition(".")[0])
    lgxa = LayerGradientXActivation(truncated(model, unit.layer, unit, unit.position), layer)
    attr = lgxa.attribute(x)
    return attr.detach().abs().flatten(2).mean(2).sum(0)


def test_filter_actgrad_equals_captum_on_a_small_net() -> None:
    model, x = small_net(), torch.rand(5, 3, 13, 13)
    unit = Unit("4", 2)
    scores = ActGrad(progress=False).score(model, x, unit, granularity="filter")
    assert set(scores) == {"0.weight", "2.weight", "4.weight"}
    for name in ("0.weight", "2.weight"):
        torch.testing.assert_close(
            scores[name], captum_filter_scores(model, x, unit, name), atol=1e-5, rtol=1e-5
        )
    # the unit's own layer: only its channel is in the region
    expected = captum_filter_scores(model, x, unit, "4.weight")
    assert scores["4.weight"][2] == pytest.approx(float(expected[2]), abs=1e-5)
    assert float(scores["4.weight"].sum()) == pytest.approx(float(expected[2]), abs=1e-5)


def test_filter_actgrad_is_the_same_read_after_the_relu() -> None:
    model, x, unit = small_net(1), torch.randn(4, 3, 13, 13), Unit("4", 0)
    scores = ActGrad(progress=False).score(model, x, unit, granularity="filter")
    lgxa = LayerGradientXActivation(truncated(model, unit.layer, unit, None), model[1])
    after_relu = lgxa.attribute(x).detach().abs().flatten(2).mean(2).sum(0)
    torch.testing.assert_close(scores["0.weight"], after_relu, atol=1e-6, rtol=1e-5)


def test_filter_actgrad_equals_captum_on_alexnet_with_inplace_relus(alexnet: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.rand(3, 3, 67, 67)
    unit = Unit("features.8", 7, (1, 2))
    scores = ActGrad(progress=False).score(alexnet, x, unit, granularity="filter")
    reference = copy.deepcopy(alexnet)  # captum reads a stored output; keep it un-rewritten
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for name in ("features.0.weight", "features.3.weight", "features.6.weight"):
        expected = captum_filter_scores(reference, x, unit, name)
        assert float(expected.max()) > 0
        torch.testing.assert_close(scores[name], expected, atol=1e-5, rtol=1e-5)


def hand_mask_grad(model: nn.Module, x: Tensor, objective: Objective) -> dict[str, Tensor]:
    """w · ∂f/∂w by plain autograd on copies of the weights (the model is not touched)."""
    model = copy.deepcopy(model)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    for p in model.parameters():
        p.requires_grad_(True)
    out: list[Tensor] = []
    layer = model.get_submodule(objective.unit.layer)
    handle = layer.register_forward_hook(lambda m, a, o: out.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    value = objective(out[0])
    grads = torch.autograd.grad(value, list(weights.values()), allow_unused=True)
    return {
        n: (w.detach() * (g if g is not None else torch.zeros_like(w)))
        for (n, w), g in zip(weights.items(), grads, strict=True)
    }


@pytest.mark.parametrize("kind", ["position", "sum", "abs_sum"])
def test_snip_equals_a_hand_computation(kind: str) -> None:
    model, x = small_net(3), torch.randn(4, 3, 11, 11)
    objective = Objective(Unit("4", 1), kind)
    hand = hand_mask_grad(model, x, objective)
    for gran, reduce in (
        ("weight", lambda t: t),
        ("kernel", lambda t: t.mean((2, 3))),
        ("filter", lambda t: t.mean((1, 2, 3))),
    ):
        scores = SNIP(progress=False).score(model, x, objective, granularity=gran)
        for name, s in scores.items():
            expected = reduce(hand[name].abs())
            if name == "4.weight":  # other channels are outside the region: 0
                expected = torch.where(scores.regions[name], expected, 0.0)
            torch.testing.assert_close(s, expected, atol=1e-6, rtol=1e-5)


def test_actgrad_weight_level_is_snip_weight_level() -> None:
    model, x = small_net(4), torch.rand(3, 3, 11, 11)
    a = ActGrad(progress=False).score(model, x, Unit("4", 0), granularity="weight")
    b = SNIP(progress=False).score(model, x, Unit("4", 0), granularity="weight")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def loop_kernel_actgrad(conv: nn.Conv2d | nn.Conv1d, x: Tensor, g: Tensor) -> Tensor:
    """Σ_n mean_map |(W_oi ∗ x_i) · g_o| by an explicit loop over (o, i)."""
    fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    groups, w = conv.groups, conv.weight.detach()
    out_ch, in_g = w.shape[:2]
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    scores = torch.zeros(out_ch, in_g)
    for o in range(out_ch):
        group = o // (out_ch // groups)
        for j in range(in_g):
            i = group * in_g + j
            z = fn(xp[:, i : i + 1], w[o : o + 1, j : j + 1], None, conv.stride, 0, conv.dilation)
            scores[o, j] = (z[:, 0] * g[:, o]).abs().flatten(1).mean(1).sum()
    return scores


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"stride": 2, "padding": 2, "dilation": 2},
        {"groups": 2, "padding": 1},
        {"padding": "same", "padding_mode": "reflect"},
        {"padding": 1, "padding_mode": "circular", "stride": 2},
    ],
)
@pytest.mark.parametrize("chunk_bytes", [1, 2**30])
def test_kernel_actgrad_equals_an_explicit_loop(kwargs: dict[str, Any], chunk_bytes: int) -> None:
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 6, 3, **kwargs)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), conv, nn.ReLU(), nn.Conv2d(6, 3, 3)
    )
    x = torch.randn(3, 2, 12, 12)
    objective = Objective(Unit("4", 1), "sum")
    scores = ActGrad(chunk_bytes=chunk_bytes, progress=False).score(model, x, objective)
    hidden = model[:2](x)
    y = conv(hidden)
    g = torch.autograd.grad(objective(model[3:](y)), y)[0]
    torch.testing.assert_close(scores["2.weight"], loop_kernel_actgrad(conv, hidden.detach(), g))


def test_kernel_actgrad_on_conv1d_and_linear() -> None:
    torch.manual_seed(6)
    conv = nn.Conv1d(3, 4, 3, stride=2)
    lin = nn.Linear(4 * 4, 5)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), lin)
    x = torch.randn(6, 3, 10)
    scores = ActGrad(progress=False).score(model, x, Unit("3", 2))
    y = conv(x)
    h = model[1:3](y)
    out = lin(h)
    gy, gout = torch.autograd.grad(out[:, 2].sum(), [y, out])
    torch.testing.assert_close(scores["0.weight"], loop_kernel_actgrad(conv, x, gy))
    w = lin.weight.detach()
    expected = (w[None] * h.detach()[:, None, :] * gout[:, :, None]).abs().sum(0)
    torch.testing.assert_close(
        scores["3.weight"], torch.where(scores.regions["3.weight"], expected, 0)
    )


def test_filter_actgrad_on_linear_is_activation_times_gradient() -> None:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2))
    x = torch.randn(4, 5)
    scores = ActGrad(progress=False).score(model, x, Unit("2", 1), granularity="filter")
    a = model[0](x)
    g = torch.autograd.grad(model[1:](a)[:, 1].sum(), a)[0]
    torch.testing.assert_close(scores["0.weight"], (a * g).abs().sum(0).detach())


def force_by_hand(model: nn.Sequential, x: Tensor, unit: Unit, keep: float, rounds: int):
    """FORCE at kernel granularity with explicit F.conv2d and leaf masks (no polyprune code
    except Masks.from_scores for the selection)."""
    convs = {f"{i}.weight": m for i, m in enumerate(model) if isinstance(m, nn.Conv2d)}
    template = SNIP(progress=False).score(model, x, unit)  # only for regions / shapes
    masks = {n: torch.ones(c.weight.shape[:2]) for n, c in convs.items()}
    fractions = [keep ** (r / (rounds - 1)) for r in range(rounds)]
    history: list[Masks] = []
    scores = template
    for r, fraction in enumerate(fractions):
        if r:
            chosen = Masks.from_scores(scores, fraction)
            masks = {n: chosen[n].float() for n in chosen}
            history.append(chosen)
        leaves = {n: m.clone().requires_grad_() for n, m in masks.items()}
        h = x
        for i, m in enumerate(model):
            name = f"{i}.weight"
            if name in convs:
                c = convs[name]
                w = c.weight.detach() * leaves[name][:, :, None, None]
                b = None if c.bias is None else c.bias.detach()
                h = F.conv2d(h, w, b, c.stride, c.padding, c.dilation, c.groups)
            else:
                h = m(h)
            if str(i) == unit.layer:
                break
        value = h[:, unit.channel, (h.shape[2] - 1) // 2, (h.shape[3] - 1) // 2].sum()
        grads = torch.autograd.grad(value, list(leaves.values()))
        pairs = zip(leaves, grads, strict=True)
        raw = {n: torch.where(template.regions[n], g.abs(), 0) for n, g in pairs}
        scores = type(template)(
            raw, "kernel", weight_shapes=template.weight_shapes, regions=template.regions
        )
    return scores, history


def test_force_matches_a_hand_implementation_and_from_scores_gives_its_selection() -> None:
    model, x = small_net(8), torch.rand(4, 3, 13, 13)
    unit, keep = Unit("4", 3), 0.2
    scores = FORCE(rounds=4, keep=keep, progress=False).score(model, x, unit)
    expected, history = force_by_hand(model, x, unit, keep, rounds=4)
    for name in scores:
        torch.testing.assert_close(scores[name], expected[name])
    final = Masks.from_scores(scores, keep)
    assert final.kept_fraction() == pytest.approx(keep, abs=0.02)
    assert all(torch.equal(final[n], Masks.from_scores(expected, keep)[n]) for n in final)
    # the last round scored the network masked at `keep`; pruned elements still score > 0
    last = history[-1]
    pruned_scores = torch.cat([scores[n][~last[n]] for n in scores])
    assert float(pruned_scores.max()) > 0


def test_force_one_round_at_weight_level_is_snip() -> None:
    model, x = small_net(9), torch.rand(3, 3, 11, 11)
    a = FORCE(rounds=1, keep=0.1, progress=False).score(
        model, x, Unit("4", 0), granularity="weight"
    )
    b = SNIP(progress=False).score(model, x, Unit("4", 0), granularity="weight")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_force_schedule_is_exponential_from_all_to_keep() -> None:
    schedule = FORCE(rounds=10, keep=0.01).schedule()
    assert schedule[0] == 1.0 and schedule[-1] == pytest.approx(0.01)
    ratios = [b / a for a, b in itertools.pairwise(schedule)]
    assert max(ratios) == pytest.approx(min(ratios)) == pytest.approx(0.01 ** (1 / 9))
    assert FORCE(rounds=1).schedule(keep=0.3) == [1.0]
    assert FORCE(rounds=3).schedule(keep=0.25) == [1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "scorer",
    [ActGrad(progress=False), SNIP(progress=False), FORCE(3, keep=0.3, progress=False)],
    ids=repr,
)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_scores_do_not_depend_on_batching(scorer: Scorer, granularity: str) -> None:
    model, x = small_net(10), torch.rand(6, 3, 11, 11)
    whole = scorer.score(model, x, Unit("4", 1), granularity=granularity)
    labels = torch.zeros(6)
    loader = [(x[:2], labels[:2]), (x[2:], labels[2:])]  # like a DataLoader
    generator = (x[i : i + 3] for i in (0, 3))
    shuffled = DataLoader(TensorDataset(x, labels), batch_size=4, shuffle=True)  # order is moot
    for batches in (loader, generator, shuffled):
        parts = scorer.score(model, batches, Unit("4", 1), granularity=granularity)
        for name in whole:
            torch.testing.assert_close(parts[name], whole[name], atol=1e-6, rtol=1e-4)


def test_every_scorer_is_a_scorer_and_zero_outside_the_region() -> None:
    model, x = small_net(11), torch.rand(2, 3, 11, 11)
    for scorer in (ActGrad(), SNIP(), FORCE(2, keep=0.5), Magnitude(), Random(seed=1)):
        assert isinstance(scorer, Scorer)
        for gran in GRANULARITIES:
            scores = scorer.score(model, x, Unit("4", 2), granularity=gran)
            assert scores.granularity == gran and scores.unit == Unit("4", 2)
            for name, s in scores.items():
                assert not bool(s[~scores.regions[name]].any())
                assert bool((s >= 0).all())
            assert bool(scores["4.weight"][2].any())


def test_random_is_seeded_and_magnitude_is_mean_abs_weight() -> None:
    model = small_net(12)
    a, b, c = (Random(seed=s).score(model, None, Unit("4", 0)) for s in (5, 5, 6))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    mag = Magnitude().score(model, None, Unit("4", 0), granularity="filter")
    torch.testing.assert_close(
        mag["2.weight"], model.get_parameter("2.weight").detach().abs().mean((1, 2, 3))
    )


def test_random_per_cluster_seeds_wrap_for_the_largest_seeds() -> None:
    top = 2**63 - 1  # the largest seed
    draws = [Random(seed=top).for_cluster(top, label).seed for label in (0, 1, 0)]
    assert draws[0] == draws[2] != draws[1]  # deterministic, one per cluster
    assert all(0 <= s <= top for s in draws)  # it raised "seed must be an int in [0, ...]"
    assert Random(seed=3).for_cluster(2, 5).seed == 3 + 2000 + 5  # small seeds as before
