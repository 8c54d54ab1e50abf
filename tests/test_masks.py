"""Masks: kept fractions exact to the element, deterministic ties, exact restoration, files."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import parametrize

from polyprune import Masks, Unit
from polyprune.results import Scores
from polyprune.scoring import SNIP


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 5), nn.BatchNorm2d(5),
        nn.Conv2d(5, 2, 1),
    ).eval()  # fmt: skip


def scores_for(model: nn.Module, granularity: str = "kernel") -> Scores:
    return SNIP(progress=False).score(
        model, torch.rand(2, 3, 12, 12), Unit("4", 1), granularity=granularity
    )


@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 2, 3])),
        min_size=1, max_size=3,
    ),
    keep=st.floats(0.05, 1.0),
    granularity=st.sampled_from(["weight", "kernel", "filter"]),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)  # fmt: skip
def test_from_scores_keeps_the_target_to_the_element(
    shapes: list[tuple[int, int, int]], keep: float, granularity: str, seed: int, ties: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    weight_shapes = {f"l{i}.weight": (o, c, k, k) for i, (o, c, k) in enumerate(shapes)}
    raw = {}
    for name, shape in weight_shapes.items():
        dims = {"weight": shape, "kernel": shape[:2], "filter": shape[:1]}[granularity]
        s = torch.rand(dims, generator=g)
        raw[name] = (s * 3).floor() if ties else s  # many equal scores
    scores = Scores(raw, granularity, weight_shapes=weight_shapes)
    total = sum(math.prod(s) for s in weight_shapes.values())
    target = math.floor(keep * total + 0.5)
    if target == 0:
        with pytest.raises(ValueError, match="keeps 0"):
            Masks.from_scores(scores, keep)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = Masks.from_scores(scores, keep)
        b = Masks.from_scores(scores, keep)
    assert all(torch.equal(a[n], b[n]) for n in a)  # deterministic
    largest = max(math.prod(s[len(a[n].shape) :]) for n, s in weight_shapes.items())
    assert a.total_weights() == total
    if granularity == "weight":
        assert a.kept_weights() == target
    else:
        assert target <= a.kept_weights() < target + largest
    # the reference: best score first, ties to the earlier weight then the lower index,
    # until the weights taken reach the target
    items = [
        (-float(v), i, j, math.prod(weight_shapes[n][len(raw[n].shape) :]))
        for i, n in enumerate(raw)
        for j, v in enumerate(raw[n].reshape(-1).tolist())
    ]
    expected = {n: torch.zeros(raw[n].numel(), dtype=torch.bool) for n in raw}
    taken = 0
    for _, i, j, size in sorted(items):
        if taken >= target:
            break
        expected[list(raw)[i]][j] = True
        taken += size
    assert all(torch.equal(a[n].reshape(-1), expected[n]) for n in raw)


def test_ties_go_to_the_earlier_weight_then_the_lower_index() -> None:
    scores = Scores(
        {"a.weight": torch.ones(2, 2), "b.weight": torch.ones(2, 2)}, "kernel",
        weight_shapes={"a.weight": (2, 2, 1, 1), "b.weight": (2, 2, 1, 1)},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero scores, so no warning
        masks = Masks.from_scores(scores, keep=3 / 8)
    assert masks["a.weight"].tolist() == [[True, True], [True, False]]
    assert not masks["b.weight"].any()


def test_zero_scores_among_the_kept_warn() -> None:
    scores = Scores({"a.weight": torch.tensor([1.0, 0.0, 0.0, 0.0])}, "filter")
    with pytest.warns(UserWarning, match="score 0"):
        Masks.from_scores(scores, keep=0.5)


def test_global_scope_follows_scale_layer_scope_and_normalize_do_not() -> None:
    shapes = {"a.weight": (10, 1), "b.weight": (10, 1)}
    raw = {"a.weight": torch.rand(10, 1) * 1000, "b.weight": torch.rand(10, 1)}
    scores = Scores(raw, "weight", weight_shapes=shapes)
    global_ = Masks.from_scores(scores, keep=0.5)
    assert global_.layer_kept_fractions() == {"a.weight": 1.0, "b.weight": 0.0}
    per_layer = Masks.from_scores(scores, keep=0.5, scope="layer")
    assert per_layer.layer_kept_fractions() == {"a.weight": 0.5, "b.weight": 0.5}
    # normalize="layer" divides each layer by its own sum: scaling a layer changes nothing
    rescaled = Scores({"a.weight": raw["a.weight"] / 1000, "b.weight": raw["b.weight"]}, "weight")
    norm = Masks.from_scores(scores, keep=0.5, normalize="layer")
    expected = Masks.from_scores(rescaled, keep=0.5, normalize="layer")
    assert all(torch.equal(norm[n], expected[n]) for n in norm)
    assert norm.kept_weights() == 10


def test_only_the_region_counts_and_everything_outside_it_is_kept() -> None:
    model = net()
    scores = scores_for(model)
    masks = Masks.from_scores(scores, keep=0.25)
    region = scores.regions["4.weight"]
    assert region.sum() == 5 and region[1].all()  # the unit's own fan-in only
    assert masks["4.weight"][~region].all()
    # 4·3·9 + 5·4·25 + 5·1 weights can reach the unit
    assert masks.total_weights() == 108 + 500 + 5
    assert masks.kept_fraction() == pytest.approx(0.25, abs=25 / 613)


@pytest.mark.parametrize(
    ("keep", "match"),
    [(0, r"\(0, 1\]"), (-0.1, r"\(0, 1\]"), (1.01, r"\(0, 1\]"), (True, r"\(0, 1\]"),
     ("0.5", r"\(0, 1\]"), (float("nan"), r"\(0, 1\]"), (1e-6, "keeps 0")],
)  # fmt: skip
def test_bad_keep(keep: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Masks.from_scores(scores_for(net()), keep)  # type: ignore[arg-type]


def test_bad_scores_and_masks() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Masks.from_scores(Scores({"a.weight": torch.tensor([1.0, float("nan")])}, "filter"), 0.5)
    with pytest.raises(ValueError, match="scores must be a non-empty dict"):
        Masks.from_scores({}, 0.5, granularity="kernel")
    with pytest.raises(ValueError, match="scope"):
        Masks.from_scores(scores_for(net()), 0.5, scope="model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boolean"):
        Masks({"0.weight": torch.tensor([[0.5]])}, "kernel")
    with pytest.raises(ValueError, match="2-D"):
        Masks({"0.weight": torch.ones(4, dtype=torch.bool)}, "kernel")
    model = net()
    wrong_shape = Masks({"0.weight": torch.ones(4, 2, dtype=torch.bool)}, "kernel")
    missing = Masks({"7.weight": torch.ones(4, 3, dtype=torch.bool)}, "kernel")
    not_maskable = Masks({"3.weight": torch.ones(5, dtype=torch.bool)}, "filter")
    before = [(k, v.clone()) for k, v in model.state_dict().items()]
    for masks, match in (
        (wrong_shape, r"shape \(4, 2\).*\(4, 3\)"),
        (missing, "'7.weight' is not the weight of a maskable"),
        (not_maskable, "'3.weight' is not the weight of a maskable"),
    ):
        with pytest.raises(ValueError, match=match):
            masks.apply(model)
        with pytest.raises(ValueError, match=match):
            masks.to_torch_prune(model)
    assert [k for k, _ in before] == list(model.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def state(model: nn.Module) -> tuple[list[tuple[str, int]], list[tuple[str, Tensor]]]:
    params = [(n, id(p)) for n, p in model.named_parameters()]
    return params, [(k, v.clone()) for k, v in model.state_dict().items()]


def assert_restored(
    model: nn.Module, before: tuple[list[tuple[str, int]], list[tuple[str, Tensor]]]
) -> None:
    params, sd = before
    assert [(n, id(p)) for n, p in model.named_parameters()] == params  # same Parameter objects
    now = model.state_dict()
    assert list(now) == [k for k, _ in sd]  # same keys, same order
    assert all(torch.equal(now[k], v) for k, v in sd)  # bit for bit
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_applied_masks_the_weights_and_restores_the_model_exactly() -> None:
    model, x = net(), torch.rand(2, 3, 12, 12)
    masks = Masks.from_scores(scores_for(model), keep=0.3)
    before = state(model)
    conv = model.get_submodule("0")
    assert isinstance(conv, nn.Conv2d)
    expected = conv.weight.detach() * masks["0.weight"][:, :, None, None]
    with masks.applied(model) as inside:
        assert inside is model
        assert torch.equal(conv.weight, expected)  # masked: computed, not a Parameter
        masked_out = model(x)
    assert_restored(model, before)
    assert not torch.equal(model(x), masked_out)
    with pytest.raises(RuntimeError, match="boom"), masks.applied(model):
        raise RuntimeError("boom")
    assert_restored(model, before)


def test_apply_and_remove() -> None:
    model = net()
    scores = scores_for(model, "filter")
    masks, other = Masks.from_scores(scores, keep=0.5), Masks.from_scores(scores, keep=0.2)
    before = state(model)
    assert masks.apply(model) is model
    assert parametrize.is_parametrized(model[0], "weight")
    with pytest.raises(ValueError, match="already applied"):
        masks.apply(model)
    with pytest.raises(ValueError, match="already masked or pruned"):
        other.apply(model)
    masks.remove(model)
    assert_restored(model, before)
    with pytest.raises(ValueError, match="not applied"):
        masks.remove(model)


@pytest.mark.parametrize("granularity", ["weight", "kernel", "filter"])
def test_save_and_load(tmp_path: Path, granularity: str) -> None:
    model = net()
    masks = Masks.from_scores(scores_for(model, granularity), keep=0.2)
    masks.unit = Unit("4", 1, (2, 3))
    path = tmp_path / "masks.pt"
    masks.save(path)
    raw = torch.load(path, weights_only=True)  # plain containers only
    assert raw["granularity"] == granularity and list(raw["masks"]) == list(masks)
    loaded = Masks.load(path, model=model)
    assert loaded.unit == Unit("4", 1, (2, 3)) and loaded.granularity == granularity
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    assert loaded.kept_fraction() == masks.kept_fraction()
    assert loaded.iou(masks) == 1.0


def test_load_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    masks = Masks.from_scores(scores_for(net()), keep=0.2)
    masks.save(tmp_path / "m.pt")
    torch.manual_seed(1)
    other = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 5))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 3\).*\(6, 3\)"):
        Masks.load(tmp_path / "m.pt", model=other)
    with pytest.raises(ValueError, match="not the weight of a maskable"):
        Masks.load(tmp_path / "m.pt", model=nn.Sequential(nn.Conv2d(3, 4, 3)))
    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a polyprune masks file"):
        Masks.load(tmp_path / "x.pt")


def test_iou_by_hand() -> None:
    shapes = {"a.weight": (2, 2, 3, 3)}
    a = Masks({"a.weight": torch.tensor([[1, 1], [0, 0]])}, "kernel", weight_shapes=shapes)
    b = Masks({"a.weight": torch.tensor([[0, 1], [1, 0]])}, "kernel", weight_shapes=shapes)
    assert a.iou(b) == pytest.approx(1 / 3)  # 9 shared weights of 27
    assert a.iou(a) == 1.0
    nothing = Masks({k: torch.zeros_like(v) for k, v in a.items()}, a.granularity)
    assert math.isnan(nothing.iou(nothing))  # undefined, not a perfect match
    c = Masks({"a.weight": torch.tensor([1, 0])}, "filter")
    with pytest.raises(ValueError, match="same weights at the same granularity"):
        a.iou(c)
