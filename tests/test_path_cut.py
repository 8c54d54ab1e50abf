"""The path-aware cut (polyprune.scoring): a scorer lowers its threshold until the *effective*
masks (kernels on a kept input→unit path) keep ``keep`` of the weights, and no further."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import polyprune as pp
from polyprune import zoo
from polyprune.masks import Scores
from polyprune.scoring import SNIP, ActGrad, BaseScorer, ScoringJob

NAMES = ["0.weight", "1.weight", "2.weight"]
UNIT = pp.Unit("2", 0)


def chain(width: int = 2) -> nn.Module:
    """1×1 convolutions 1 → width → width → 2: every kernel is one weight."""
    return nn.Sequential(nn.Conv2d(1, width, 1), nn.Conv2d(width, width, 1), nn.Conv2d(width, 2, 1))


def scores_of(model: nn.Module, values: dict[str, torch.Tensor]) -> Scores:
    """Kernel scores on ``model`` for UNIT (layer 2: only the unit's row is in the region)."""
    shapes = {n: tuple(model.get_parameter(n).shape) for n in NAMES}
    regions = {n: torch.ones(shapes[n][:2], dtype=torch.bool) for n in NAMES}
    regions["2.weight"][1] = False
    full = {n: values[n].float() for n in NAMES}
    return Scores(full, "kernel", weight_shapes=shapes, regions=regions, unit=UNIT)


def kept(masks: pp.Masks, model: nn.Module) -> int:
    return masks.effective(model).kept_weights()


def test_the_cut_is_the_shortest_prefix_whose_paths_keep_keep() -> None:
    """Hand-built: the top kernels form no path; the cut goes down the ranking to the first
    complete one (0.9 → 0.2 → 0.3), and not a kernel further."""
    model = chain()
    scores = scores_of(model, {
        "0.weight": torch.tensor([[0.9], [0.1]]),
        "1.weight": torch.tensor([[0.2, 0.04], [0.03, 0.8]]),  # (out, in)
        "2.weight": torch.tensor([[0.3, 0.7], [0.0, 0.0]]),
    })  # fmt: skip
    snip = SNIP(keep=0.25)  # 8 kernels in the region: 2 to keep, a path needs 3
    plain = snip.cut(scores)
    assert kept(plain, model) == 0  # 0.9 and 0.8: no path
    raw = snip.cut(scores, model=model)
    assert raw.kept_weights() == 5  # 0.9, 0.8, 0.7, 0.3, 0.2: the first prefix with a path
    eff = raw.effective(model)
    assert eff["0.weight"].tolist() == [[True], [False]]
    assert eff["1.weight"].tolist() == [[True, False], [False, False]]
    assert eff["2.weight"][0].tolist() == [True, False] and eff.kept_weights() == 3


def test_a_cut_whose_paths_already_keep_keep_is_unchanged() -> None:
    model = chain()
    scores = scores_of(model, {
        "0.weight": torch.tensor([[0.9], [0.1]]),
        "1.weight": torch.tensor([[0.8, 0.0], [0.0, 0.0]]),
        "2.weight": torch.tensor([[0.7, 0.0], [0.0, 0.0]]),
    })  # fmt: skip
    raw = SNIP().cut(scores, 3 / 8, model=model)
    assert raw.kept_weights() == 3 == kept(raw, model)
    assert all(torch.equal(raw[n], SNIP().cut(scores, 3 / 8)[n]) for n in NAMES)


def test_when_the_whole_region_falls_short_the_cut_keeps_what_it_can() -> None:
    """A region that holds the other output channel's kernels (never on a path to the unit):
    at keep 0.9 (9 of 10 kernels) at most 8 are effective; the cut is the shortest prefix with
    those 8, which leaves out the two dead kernels when they rank last."""
    model = chain()
    scores = scores_of(model, {
        "0.weight": torch.tensor([[0.9], [0.8]]),
        "1.weight": torch.tensor([[0.7, 0.6], [0.5, 0.4]]),
        "2.weight": torch.tensor([[0.3, 0.2], [0.1, 0.05]]),
    })  # fmt: skip
    scores.regions["2.weight"][1] = True
    raw = SNIP().cut(scores, 0.9, model=model)
    assert raw.total_weights() == 10 and raw.kept_weights() == 8 == kept(raw, model)
    assert raw["2.weight"][1].tolist() == [False, False]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    keep=st.floats(0.05, 1.0),
    width=st.integers(2, 4),
    zeros=st.floats(0.0, 0.6),
)
def test_global_cut_is_minimal_against_a_scan_of_every_prefix(
    seed: int, keep: float, width: int, zeros: float
) -> None:
    torch.manual_seed(seed)
    model = chain(width)
    g = torch.Generator().manual_seed(seed)
    values = {}
    for n in NAMES:
        shape = tuple(model.get_parameter(n).shape[:2])
        v = torch.rand(shape, generator=g)
        values[n] = torch.where(torch.rand(shape, generator=g) < zeros, torch.zeros(()), v)
    scores = scores_of(model, values)
    total = pp.Masks.from_scores(scores, 1.0).total_weights()
    target = int(keep * total + 0.5)
    if target == 0:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zero scores kept by order
        raw = SNIP().cut(scores, keep, model=model)
        prefixes = [pp.Masks.from_scores(scores, n / total) for n in range(1, total + 1)]
    reach = [kept(p, model) for p in prefixes]  # 1×1 kernels: prefix n keeps n weights
    goal = min(target, reach[-1])
    shortest = next(n for n, r in enumerate(reach, 1) if r >= goal and n >= target)
    assert raw.kept_weights() == shortest
    assert all(torch.equal(raw[n], prefixes[shortest - 1][n]) for n in NAMES)
    assert kept(raw, model) >= goal


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), keep=st.floats(0.13, 0.9))  # every layer keeps ≥ 1
def test_layer_cut_cuts_every_layer_at_the_same_fraction(seed: int, keep: float) -> None:
    model = chain(4)
    g = torch.Generator().manual_seed(seed)
    values = {n: torch.rand(model.get_parameter(n).shape[:2], generator=g) for n in NAMES}
    scores = scores_of(model, values)
    raw = SNIP(scope="layer").cut(scores, keep, model=model)
    target = int(keep * raw.total_weights() + 0.5)
    assert kept(raw, model) >= target
    fractions, sizes = [], []
    for n in NAMES:
        region = scores.regions[n]
        chosen, s = raw[n][region], scores[n][region]
        if chosen.any() and not chosen.all():  # each layer keeps its best elements
            assert s[chosen].min() >= s[~chosen].max()
        fractions.append(int(chosen.sum()) / int(region.sum()))
        sizes.append(int(region.sum()))
    plain = SNIP(scope="layer").cut(scores, keep)
    if kept(plain, model) < target:  # the path-aware ranking: one fraction, to one element
        assert max(f - 1 / s for f, s in zip(fractions, sizes, strict=True)) <= min(fractions)


def test_the_cut_needs_scores_with_their_unit() -> None:
    model = chain()
    with pytest.raises(TypeError, match="Scores of score"):
        SNIP(keep=0.5).cut({n: torch.ones(2, 1) for n in NAMES[:1]}, model=model)


class _Top(BaseScorer):  # not registered: other tests list every registered method
    """Scores as the hand-built test gives them (the model's own weights are ignored)."""

    uses_inputs = False

    def compute(self, job: ScoringJob) -> dict[str, torch.Tensor]:
        return {
            "0.weight": torch.tensor([[0.9], [0.1]]),
            "1.weight": torch.tensor([[0.2, 0.04], [0.03, 0.8]]),
            "2.weight": torch.tensor([[0.3, 0.7], [0.0, 0.0]]),
        }


def test_fit_subnetwork_reports_keep_on_paths() -> None:
    model = chain()
    x, members = torch.rand(4, 1, 3, 3), torch.arange(4) < 2
    sub = pp.fit_subnetwork(model, UNIT, x, members, _Top(), keep=0.25)
    assert sub.raw_masks is not None and sub.raw_masks.kept_weights() == 5
    assert sub.masks.kept_weights() == 3 and sub.kept_fraction == 3 / 8


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, pp.Unit, torch.Tensor, torch.Tensor]:
    """The demo's trained concepts model, its unit's top 100 and one merged concept's members."""
    name = "concepts-merged"
    card, model = zoo.model_card(name), zoo.load(name)
    images, labels = zoo.concept_images(4000, size=card.input_shape[1], seed=7)
    unit = pp.Unit(*card.unit)
    top = pp.top_activating(model, unit, images, k=100, progress=False)
    crops = images[top.indices] if top.inputs is None else top.inputs
    members = labels[top.indices] == card.concepts.index(card.merged[0])
    return model, unit, crops, members


@pytest.mark.parametrize("scorer", [ActGrad, SNIP])
def test_a_trained_models_top_five_percent_holds_no_path_but_the_cut_keeps_five(
    trained, scorer
) -> None:
    """The plain top 5 % of ActGrad's and SNIP's kernels lie on no input→unit path."""
    model, unit, crops, members = trained
    sub = pp.fit_subnetwork(model, unit, crops, members, scorer(progress=False), keep=0.05)
    scores = scorer(progress=False).score(model, crops[members], sub.unit)
    assert pp.Masks.from_scores(scores, 0.05).effective(model, sub.unit).kept_weights() == 0
    assert 0.05 <= sub.kept_fraction < 0.08
