"""ContinuousSparsifier and ExponentialTemperature: exact values, gradients, restoring, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import assert_restored, snapshot
from torch import nn
from torch.nn.utils import parametrize

import polyprune as pp
from polyprune._masking import expand
from polyprune.sparsify import ContinuousSparsifier, ExponentialTemperature


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Conv2d(5, 2, 3)
    ).eval()


UNIT = pp.Unit("2", 3)  # conv "2", channel 3: every kernel of conv 0, row 3 of conv 2


# -- ExponentialTemperature ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "steps"), [(1.0, 200.0, 160), (1.0, 200.0, 2), (2.0, 0.5, 7)]
)
def test_temperature_schedule_values_exact(start, end, steps):
    cs = ContinuousSparsifier(small_net(), up_to=UNIT)
    temp = ExponentialTemperature(cs, start=start, end=end, steps=steps)
    factor = (end / start) ** (1 / (steps - 1))
    assert temp.factor == pytest.approx(factor, rel=1e-15)
    values = [cs.temperature]
    assert values[0] == start == temp.last_value
    for _ in range(steps - 1):
        values.append(temp.step())
        assert cs.temperature == values[-1] == temp.last_value
    assert values[-1] == end  # exactly, after steps - 1 steps
    for k, v in enumerate(values):
        assert v == pytest.approx(start * factor**k, rel=1e-12)
    for a, b in itertools.pairwise(values):
        assert b / a == pytest.approx(factor, rel=1e-12)
    assert temp.step() == end and cs.temperature == end  # stays at end
    cs.remove()


def test_temperature_paper_schedule_and_state_dict():
    cs = ContinuousSparsifier(small_net(), up_to=UNIT)
    temp = ExponentialTemperature(cs, steps=160)  # the paper: 1 → 200 over 160 epochs
    assert temp.factor == pytest.approx(200 ** (1 / 159), rel=1e-15)
    for _ in range(50):
        temp.step()
    state = temp.state_dict()
    assert state == {"start": 1.0, "end": 200.0, "steps": 160, "last_step": 50}
    other = ExponentialTemperature(cs, start=1.0, end=200.0, steps=160)
    assert cs.temperature == 1.0
    other.load_state_dict(state)
    assert other.last_value == temp.last_value == cs.temperature == pytest.approx(200 ** (50 / 159))
    cs.remove()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": 1}, "steps must be an int ≥ 2"), ({"start": 0.0}, "start must be"),
     ({"end": float("inf")}, "end must be"), ({"steps": 3.0}, "steps must be")],
)  # fmt: skip
def test_temperature_bad_arguments(kwargs, match):
    cs = ContinuousSparsifier(small_net(), up_to=UNIT)
    with pytest.raises(ValueError, match=match):
        ExponentialTemperature(cs, **kwargs)
    assert cs.temperature == 1.0  # nothing changed
    cs.remove()


# -- masks, penalty, gradients --------------------------------------------------------------------


def test_regions_follow_the_unit():
    model = small_net()
    with ContinuousSparsifier(model, up_to=UNIT, granularity="kernel") as cs:
        names = [n for n, _ in cs.named_parameters()]
        assert names == ["0.weight", "2.weight"]  # conv 4 is downstream: not masked
        assert cs.regions["0.weight"].all()
        assert cs.regions["2.weight"].sum() == 4 and cs.regions["2.weight"][3].all()
        assert cs.num_elements() == 4 * 3 + 4
        assert parametrize.is_parametrized(model[0], "weight")
        assert not parametrize.is_parametrized(model[4], "weight")


@pytest.mark.parametrize("granularity", ["kernel", "weight", "filter"])
def test_masked_weight_is_w_times_sigmoid(granularity):
    model = small_net()
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ContinuousSparsifier(
        model, up_to=UNIT, granularity=granularity, init_noise=1.0, seed=3, temperature=2.5
    ) as cs:
        for name, logits in cs.named_parameters():
            module = model.get_submodule(name.rpartition(".")[0])
            w = originals[name]
            mask = torch.sigmoid(2.5 * logits.detach())
            mask = torch.where(cs.regions[name], mask, torch.ones_like(mask))
            torch.testing.assert_close(module.weight, w * expand(mask, tuple(w.shape)))
            assert torch.equal(cs.soft_masks()[name], mask)
        # outside the region the weight is the original, bit for bit
        conv = model[2]
        assert isinstance(conv, nn.Conv2d)  # its weight is masked (computed), not a Parameter
        assert torch.equal(conv.weight[:3], originals["2.weight"][:3])


def test_penalty_equals_analytical_sum():
    model = small_net()
    with ContinuousSparsifier(model, up_to=UNIT, init_noise=2.0, seed=1) as cs:
        cs.temperature = 3.7
        expected = 0.0
        for name, logits in cs.named_parameters():
            for value, inside in zip(
                logits.detach().flatten().tolist(), cs.regions[name].flatten().tolist(), strict=True
            ):
                expected += inside / (1 + math.exp(-3.7 * value))
        assert cs.penalty().item() == pytest.approx(expected, rel=1e-6)
        assert cs.penalty(normalized=True).item() == pytest.approx(expected / 16, rel=1e-6)


def test_init_sets_the_initial_mask_value_and_seed_is_deterministic():
    model = small_net()
    with ContinuousSparsifier(model, up_to=UNIT, init=0.8, temperature=2.0) as cs:
        for name, m in cs.soft_masks().items():
            assert torch.allclose(m[cs.regions[name]], torch.tensor(0.8))
        assert cs.hard_masks().kept_fraction() == 1.0  # σ > ½ ⇔ m > 0
    logits = []
    for seed in (5, 5, 6):
        with ContinuousSparsifier(model, up_to=UNIT, init_noise=0.1, seed=seed) as cs:
            logits.append(torch.cat([p.detach().flatten() for p in cs.parameters()]))
    assert torch.equal(logits[0], logits[1]) and not torch.equal(logits[0], logits[2])


def test_gradients_flow_only_to_logits():
    model = small_net()
    model.get_parameter("2.bias").requires_grad_(False)  # a mixed set of flags, restored as it was
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.randn(4, 3, 9, 9)
    with ContinuousSparsifier(model, up_to=UNIT, init_noise=0.5, seed=0) as cs:
        assert not any(p.requires_grad for p in model.parameters() if p.dim() == 1)
        out = model[:3](x)
        (out[:, 3].sum() + cs.penalty()).backward()
        for p in cs.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
        for name, p in model.named_parameters():
            if "parametrizations" not in name or name.endswith(".original"):
                assert p.grad is None, name
        # outside the region: zero gradient (those masks are not learned)
        grad = cs._logits["2.weight"].grad
        assert grad is not None and (grad[:3] == 0).all()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_soft_and_hard_agree_at_high_temperature():
    model = small_net()
    x = torch.randn(8, 3, 9, 9)
    cs = ContinuousSparsifier(model, up_to=UNIT, init_noise=1.0, seed=2)
    cs.temperature = 1e5
    with torch.no_grad():
        soft = model[:3](x)[:, 3]
    cs.remove()
    hard_masks = cs.hard_masks()
    with hard_masks.applied(model), torch.no_grad():
        hard = model[:3](x)[:, 3]
    assert 0 < hard_masks.kept_fraction() < 1
    assert (soft - hard).abs().max() <= 1e-4
    with torch.no_grad():
        dense = model[:3](x)[:, 3]
    assert (dense - hard).abs().max() > 1e-2  # the hard mask does change the unit


def test_hard_masks_counts_follow_design():
    model = small_net()
    cs = ContinuousSparsifier(model, up_to=UNIT)
    with torch.no_grad():
        cs._logits["0.weight"].fill_(-1.0)
        cs._logits["0.weight"][0, :2] = 1.0  # 2 kernels of conv 0 kept (each 3·3 weights)
        cs._logits["2.weight"].fill_(1.0)  # all of conv 2 positive, but only row 3 is the region
    masks = cs.hard_masks()
    assert masks.unit == UNIT and masks.granularity == "kernel"
    assert masks.weight_shapes == {"0.weight": (4, 3, 3, 3), "2.weight": (5, 4, 3, 3)}
    assert masks["2.weight"].all()  # outside the region: kept
    assert masks.kept_fraction() == cs.kept_fraction() == (2 + 4) / (12 + 4)
    # the paper's count: kept weights over all weights of the masked layers
    assert cs.paper_kept_fraction() == pytest.approx((2 + 4) * 9 / (4 * 3 * 9 + 5 * 4 * 9))
    cs.remove()


def test_modules_mode_masks_whole_weights():
    model = small_net()
    with ContinuousSparsifier(model, modules=["2", "4"], granularity="filter") as cs:
        assert [n for n, _ in cs.named_parameters()] == ["2.weight", "4.weight"]
        assert cs.num_elements() == 5 + 2
        assert cs.hard_masks().unit is None


def test_state_dict_round_trip():
    model = small_net()
    with ContinuousSparsifier(model, up_to=UNIT, init_noise=1.0, seed=0) as a:
        a.temperature = 7.0
        state = a.state_dict()
    with ContinuousSparsifier(model, up_to=UNIT) as b:
        b.load_state_dict(state)
        assert b.temperature == 7.0
        for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert torch.equal(p, q)
        with pytest.raises(ValueError, match="masks"):
            b.load_state_dict(
                {"temperature": 1.0, "logits": {"0.weight": state["logits"]["0.weight"]}}
            )


# -- restoring ----------------------------------------------------------------------------------


def test_remove_and_context_manager_restore_exactly():
    model = small_net()
    model.get_parameter("0.bias").requires_grad_(False)
    before = snapshot(model)
    cs = ContinuousSparsifier(model, up_to=UNIT, granularity="weight")
    assert cs.attached
    cs.remove()
    assert not cs.attached
    cs.remove()  # idempotent
    assert_restored(model, before)
    with pytest.raises(RuntimeError, match="boom"), ContinuousSparsifier(model, up_to=UNIT):
        raise RuntimeError("boom")
    assert_restored(model, before)


def test_attach_failure_leaves_model_untouched():
    model = small_net()
    before = snapshot(model)
    with pp.Masks({"0.weight": torch.ones(4, 3, dtype=torch.bool)}).applied(model):
        with pytest.raises(ValueError, match="already carry a parametrization"):
            ContinuousSparsifier(model, up_to=UNIT)
        assert all(p.requires_grad for p in model.parameters())
    assert_restored(model, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"granularity": "channel"}, "granularity must be one of"),
        ({"init": 0.0}, r"init must be a finite number in \(0, 1\)"),
        ({"init": 1.5}, r"init must be a finite number in \(0, 1\)"),
        ({"init_noise": -1.0}, "init_noise must be"),
        ({"temperature": 0}, "temperature must be"),
        ({"up_to": None}, "exactly one of"),
        ({"modules": ["0"]}, "exactly one of"),
        ({"up_to": pp.Unit("9", 0)}, "unknown layer '9'"),
        ({"up_to": pp.Unit("2", 5)}, "channel 5 is out of range"),
        ({"up_to": None, "modules": ["1"]}, "not the weight of a maskable"),
        ({"up_to": None, "modules": "0"}, "non-empty list"),
    ],
)
def test_bad_arguments_fail_before_any_change(kwargs, match):
    model = small_net()
    before = snapshot(model)
    args = {"up_to": UNIT, **kwargs}
    with pytest.raises(ValueError, match=match):
        ContinuousSparsifier(model, **args)
    assert_restored(model, before)


def test_temperature_setter_validates():
    with ContinuousSparsifier(small_net(), up_to=UNIT) as cs:
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            cs.temperature = -1.0
        assert cs.temperature == 1.0


def test_offset_opens_the_masks_but_not_the_hard_mask():
    # σ(t·m + b): an offset moves every soft mask and the penalty, never the decision m > 0
    with ContinuousSparsifier(small_net(), up_to=UNIT, temperature=2.0) as cs:
        cs.offset = math.log(0.95 / 0.05)
        for name, m in cs.soft_masks().items():
            assert torch.allclose(m[cs.regions[name]], torch.tensor(0.95))
        assert cs.penalty(normalized=True).item() == pytest.approx(0.95, rel=1e-6)
        assert cs.hard_masks().kept_fraction() == 0.0  # the logits are still 0: undecided
        with pytest.raises(ValueError, match="offset must be a finite number"):
            cs.offset = math.nan
        assert cs.offset == pytest.approx(math.log(19))
