"""Scorer contracts: a network with a known circuit, the model left as found, bad input."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from helpers import assert_restored, snapshot
from torch import Tensor, nn

from polyprune import Masks, Unit, zoo
from polyprune.scoring import FORCE, SNIP, ActGrad, Attribution, Magnitude, Random, Scorer
from polyprune.targets import Objective

GRADIENT_SCORERS = [
    ActGrad(progress=False),
    SNIP(progress=False),
    FORCE(4, keep=0.1),
    Attribution(progress=False),
]
ALL_SCORERS = [*GRADIENT_SCORERS, Magnitude(), Random(seed=0)]
GRANULARITIES = ("weight", "kernel", "filter")


def handbuilt() -> tuple[nn.Sequential, Unit, Tensor]:
    """The hand-built network of the zoo: the unit ("4", 0) depends exactly on ``KNOWN``."""
    net = zoo.handbuilt()
    return net.model, net.unit, net.images


KNOWN = {
    name: {(o, i) for o, i in mask.nonzero().tolist()}
    for name, mask in zoo.handbuilt().truth.items()
}


def kept_kernels(masks: Masks) -> set[tuple[str, int, int]]:
    out = set()
    for name, m in masks.items():
        kernel = m.reshape(m.shape[0], m.shape[1], -1).any(2) if m.dim() > 2 else m
        region = masks.regions[name].reshape(kernel.shape[0], kernel.shape[1], -1).any(2)
        for o, i in (kernel & region).nonzero().tolist():
            out.add((name, o, i))
    return out


def known_kernels() -> set[tuple[str, int, int]]:
    return {(name, o, i) for name, pairs in KNOWN.items() for o, i in pairs}


@pytest.mark.parametrize("scorer", GRADIENT_SCORERS, ids=repr)
@pytest.mark.parametrize("granularity", ["weight", "kernel"])
def test_only_the_known_circuit_scores(scorer: Scorer, granularity: str) -> None:
    net, unit, x = handbuilt()
    scores = scorer.score(net, x, unit, granularity=granularity)
    for name, s in scores.items():
        per_kernel = s.reshape(s.shape[0], s.shape[1], -1).amax(2) if s.dim() > 2 else s
        nonzero = {(o, i) for o, i in (per_kernel != 0).nonzero().tolist()}
        assert nonzero <= KNOWN[name], name  # every other kernel scores exactly 0
        if not isinstance(scorer, FORCE):  # (FORCE's last round may cut a known path)
            assert nonzero == KNOWN[name], name


@pytest.mark.parametrize("scorer", GRADIENT_SCORERS, ids=repr)
def test_only_the_known_filters_score(scorer: Scorer) -> None:
    net, unit, x = handbuilt()
    scores = scorer.score(net, x, unit, granularity="filter")
    for name, s in scores.items():
        nonzero = set(s.nonzero().squeeze(1).tolist())
        assert nonzero <= {o for o, _ in KNOWN[name]}, name
        if not isinstance(scorer, FORCE):
            assert nonzero == {o for o, _ in KNOWN[name]}, name


@pytest.mark.parametrize("scorer", [ActGrad(progress=False), SNIP(progress=False)], ids=repr)
def test_gradient_scorers_keep_only_the_circuit_at_small_keep_and_all_of_it_at_large(
    scorer: Scorer,
) -> None:
    net, unit, x = handbuilt()
    scores = scorer.score(net, x, unit, granularity="kernel")
    known = known_kernels()
    share = len(known) / sum(int(r.sum()) for r in scores.regions.values())  # 15 / 96
    small = kept_kernels(Masks.from_scores(scores, keep=0.9 * share))
    assert small and small <= known  # precision 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zero-score elements fill the rest
        large = kept_kernels(Masks.from_scores(scores, keep=0.5))
    assert known <= large  # recall 1


def test_force_keeps_only_circuit_kernels() -> None:
    net, unit, x = handbuilt()
    scores = FORCE(5, keep=0.1, progress=False).score(net, x, unit)
    assert kept_kernels(Masks.from_scores(scores, keep=0.1)) <= known_kernels()


def bn_net() -> nn.Module:
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 3, 3)
    )
    net.train()  # BatchNorm in training mode would update its running stats
    net[0].weight.requires_grad_(False)  # a frozen weight stays frozen
    net.get_parameter("3.weight").grad = torch.full_like(
        net.get_parameter("3.weight"), 7.0
    )  # an existing .grad is kept
    return net


@pytest.mark.parametrize("scorer", ALL_SCORERS, ids=repr)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_scorers_leave_the_model_exactly_as_found(scorer: Scorer, granularity: str) -> None:
    net = bn_net()
    before = snapshot(net)
    scorer.score(net, torch.rand(3, 3, 9, 9), Unit("3", 1), granularity=granularity)
    assert_restored(net, before)


@pytest.mark.parametrize("scorer", GRADIENT_SCORERS, ids=repr)
def test_a_failure_mid_way_leaves_the_model_as_found(scorer: Scorer) -> None:
    net = bn_net()
    before = snapshot(net)
    bad = torch.rand(2, 3, 9, 9)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(batch 1,"):
        scorer.score(net, [torch.rand(2, 3, 9, 9), bad], Unit("3", 1))
    assert_restored(net, before)


class Counting(nn.Module):
    """Counts real forward passes (not fx tracing), to show errors come before any work."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        self.body[0].register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: object) -> None:
        self.calls += 1

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out


X = torch.rand(2, 3, 9, 9)
NAN = torch.full((2, 3, 9, 9), float("nan"))


@pytest.mark.parametrize(
    ("scorer", "inputs", "objective", "kwargs", "error", "match"),
    [
        (SNIP(), X, Unit("body.9", 0), {}, ValueError, "unknown layer 'body.9'"),
        (SNIP(), X, Unit("body.2", 5), {}, ValueError, "channel 5 is out of range"),
        (SNIP(), X, "body.2", {}, TypeError, "Objective or Unit"),
        (ActGrad(), torch.rand(0, 3, 9, 9), Unit("body.2", 0), {}, ValueError, "is empty"),
        (ActGrad(), [], Unit("body.2", 0), {}, ValueError, "inputs is empty"),
        (ActGrad(), iter([]), Unit("body.2", 0), {}, ValueError, "inputs is empty"),
        (ActGrad(), NAN, Unit("body.2", 0), {}, ValueError, "NaN"),
        (ActGrad(), X.long(), Unit("body.2", 0), {}, ValueError, "floating point"),
        (
            SNIP(),
            X.to(torch.uint8),
            Unit("body.2", 0),
            {},
            ValueError,
            r"convert .*float\(\) / 255",
        ),
        (SNIP(), None, Unit("body.2", 0), {}, ValueError, "needs images"),
        (SNIP(), X, Unit("body.2", 0), {"granularity": "row"}, ValueError, "granularity"),
        (FORCE(), X, Unit("body.2", 0), {}, ValueError, "needs the target kept fraction"),
        (FORCE(), X, Unit("body.2", 0), {"keep": 0.0}, ValueError, r"\(0, 1\]"),
        (FORCE(), X, Unit("body.2", 0), {"keep": 1.5}, ValueError, r"\(0, 1\]"),
        (FORCE(), X, Unit("body.2", 0), {"keep": 1e-5}, ValueError, "keeps 0"),
        (Magnitude(), torch.rand(0, 3), Unit("body.2", 0), {}, ValueError, "must be 4-D"),
        (SNIP(), X[0], Unit("body.2", 0), {}, ValueError, "must be 4-D"),
    ],
)
def test_bad_input_fails_before_any_work(
    scorer: Scorer,
    inputs: Any,
    objective: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    model = Counting()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        scorer.score(model, inputs, objective, **kwargs)
    assert model.calls == 0
    assert_restored(model, before)


def test_a_position_outside_the_map_is_a_clear_error() -> None:
    model = Counting()
    with pytest.raises(ValueError, match=r"position \(9, 9\) is outside the 5×5 map"):
        SNIP().score(model, X, Unit("body.2", 0, (9, 9)))
    assert all(p.grad is None for p in model.parameters())


def test_bad_scorer_arguments() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rounds"):
            FORCE(rounds=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep"):
        FORCE(keep=2.0)
    with pytest.raises(ValueError, match="scope"):
        FORCE(scope="model")
    with pytest.raises(ValueError, match="chunk_bytes"):
        ActGrad(chunk_bytes=0)
    with pytest.raises(TypeError, match="seed"):
        Random(seed=1.5)  # type: ignore[arg-type]


class Branches(nn.Module):
    """Module order differs from data flow; one branch never reaches the unit."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(4, 2, 3)  # registered first, runs last
        self.side = nn.Conv2d(3, 5, 1)  # feeds only the second output
        self.early = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.late(torch.relu(self.early(x))), self.side(x)


@pytest.mark.parametrize("scorer", ALL_SCORERS, ids=repr)
def test_scored_weights_come_from_the_graph(scorer: Scorer) -> None:
    scores = scorer.score(Branches(), X, Unit("late", 1))
    assert list(scores) == ["late.weight", "early.weight"]  # named_parameters order


def test_objective_kinds_change_the_scores_and_a_callable_works() -> None:
    net, unit, x = handbuilt()
    by_kind = {
        kind: SNIP(progress=False).score(net, x, Objective(unit, kind))["0.weight"]
        for kind in ("position", "sum", "abs_sum")
    }
    assert not torch.allclose(by_kind["position"], by_kind["sum"])
    mine = SNIP(progress=False).score(net, x, Objective(unit, lambda m: m.sum()))["0.weight"]
    torch.testing.assert_close(mine, by_kind["sum"])


def test_a_bad_later_batch_is_named_and_leaves_the_model_as_found() -> None:
    model = Counting()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"4-D batches, got shape \(3, 9, 9\) \(batch 1,"):
        SNIP().score(model, [X[:1], X[0]], Unit("body.2", 0))
    assert_restored(model, before)


def test_a_list_of_images_or_of_image_label_pairs_is_one_batch_of_images() -> None:
    model = Counting()
    expected = SNIP().score(model, X, Unit("body.2", 0))
    for inputs in ([X[0], X[1]], [(X[0], 1), (X[1], 0)], [X[:1], X[1:]]):
        scores = SNIP().score(model, inputs, Unit("body.2", 0))
        for name in expected:
            torch.testing.assert_close(scores[name], expected[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scorer", GRADIENT_SCORERS, ids=repr)
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_scorers_work_inside_no_grad_and_inference_mode(scorer: Scorer, context) -> None:
    net, unit, x = handbuilt()
    expected = scorer.score(net, x, unit)
    with context():
        scores = scorer.score(net, x, unit)
    assert any(bool(s.any()) for s in scores.values())
    for name in expected:
        torch.testing.assert_close(scores[name], expected[name])


FORMS = {"tensor": lambda x: x, "list": lambda x: [x[:1], x[1:]], "iterator": lambda x: iter([x])}


@pytest.mark.parametrize(
    ("scorer", "form"),
    [
        pytest.param(scorer, form, id=f"{scorer!r}-{form}")
        for scorer in ALL_SCORERS
        for form in FORMS
        if scorer.uses_inputs or form == "tensor"  # Magnitude, Random read no images
    ],
)
@pytest.mark.parametrize(
    "images",
    [torch.rand(2, 3, 2, 2), torch.rand(2, 1, 9, 9)],
    ids=["too small", "wrong channels"],
)
def test_images_the_model_cannot_run_are_refused_before_any_work(
    scorer: Scorer, form: str, images: Tensor
) -> None:
    net = bn_net()
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"does not run on images of shape") as info:
        scorer.score(net, FORMS[form](images), Unit("3", 1))
    assert "RuntimeError" in str(info.value)  # torch's own reason, in one line
    assert_restored(net, before)


@pytest.mark.parametrize("scorer", ALL_SCORERS, ids=repr)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_model_with_nan_weights_is_refused_naming_the_parameter(
    scorer: Scorer, value: float
) -> None:
    model = Counting()
    with torch.no_grad():
        model.get_parameter("body.2.weight")[1, 0, 0, 0] = value
    with pytest.raises(ValueError, match=r"parameter 'body.2.weight' with 1 NaN or infinite"):
        scorer.score(model, X, Unit("body.2", 0))
    assert model.calls == 0  # refused before any forward: nothing to restore
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("scorer", ALL_SCORERS, ids=repr)
@pytest.mark.parametrize("dtype", [torch.half, torch.bfloat16])
def test_a_half_precision_model_is_refused(scorer: Scorer, dtype: torch.dtype) -> None:
    model = Counting().to(dtype)
    with pytest.raises(ValueError, match=r"model has parameter .* convert a copy"):
        scorer.score(model, X, Unit("body.2", 0))
    assert model.calls == 0
