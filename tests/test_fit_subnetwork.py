"""fit_subnetwork: CS and scorer methods, the same Subnetwork, exact restoring, early errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_restored, snapshot
from torch import Tensor, nn

import polyprune as pp
from polyprune._cs import fit as _cs_fit
from polyprune.scoring import FORCE, SNIP, BaseScorer, ScoringJob
from polyprune.sparsify import ContinuousSparsifier, CSConfig, ExponentialTemperature
from polyprune.subnetwork import Subnetwork, fit_subnetwork


class Counting(nn.Module):
    """A small conv net that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Conv2d(5, 2, 3)
        )
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out: Tensor = self.net(x)
        return out


UNIT = pp.Unit("net.2", 3)


def data(n: int = 16, size: int = 9) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 2 == 0


class KernelMagnitude(BaseScorer):
    """A tiny scorer: |w| summed over each kernel; records the batch sizes it saw."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.seen: list[int] = []

    def compute(self, job: ScoringJob):
        self.seen = [int(x.shape[0]) for x in job.each_batch("seen")]
        assert job.objective.unit.position is not None
        return {name: job.weight(name).detach().abs().flatten(2).sum(2) for name in job.shapes}


# -- CS ------------------------------------------------------------------------------------------


def test_cs_returns_a_subnetwork_with_history_and_is_deterministic():
    model = Counting()
    images, members = data()
    a = fit_subnetwork(
        model, UNIT, images, members, config=CSConfig(epochs=4, batch_size=5), progress=False
    )
    b = fit_subnetwork(
        model, UNIT, images, members, config=CSConfig(epochs=4, batch_size=5), progress=False
    )
    assert isinstance(a, Subnetwork) and a.method == "cs"
    assert a.unit == pp.Unit("net.2", 3, (2, 2))  # the center of the 5×5 map
    assert a.masks.unit == a.unit and a.masks.granularity == "kernel"
    assert set(a.masks.regions) == {"net.0.weight", "net.2.weight"}
    assert a.kept_fraction == a.masks.kept_fraction()
    assert a.raw_masks is not None  # the fitted masks; the reported ones are their effective part
    assert a.paper_kept_fraction is not None
    assert a.paper_kept_fraction <= a.raw_masks.kept_fraction()
    assert a.kept_fraction <= a.raw_masks.kept_fraction()
    keys = {"loss", "objective", "penalty", "temperature", "kept_fraction", "lr", "seconds"}
    assert set(a.history) == keys and all(len(v) == 4 for v in a.history.values())
    assert a.history["temperature"] == pytest.approx([1.0, 200 ** (1 / 3), 200 ** (2 / 3), 200.0])
    for key in ("loss", "objective", "penalty"):
        assert a.history[key] == b.history[key]  # same seed, same run
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    loss, obj, pen = a.history["loss"][0], a.history["objective"][0], a.history["penalty"][0]
    assert loss == pytest.approx(obj + 0.1 * pen, rel=1e-5)  # "both": lam = 0.1, mean penalty
    assert a.calibration is None  # no BCE logit outside loss="separate"


def test_cs_milestones_and_paper_settings():
    model = Counting()
    images, members = data()
    config = CSConfig.paper(epochs=6, milestones=(3, 5))
    sub = fit_subnetwork(model, UNIT, images, members, config=config, progress=False)
    assert sub.history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001])
    assert sub.calibration is None
    assert sub.history["penalty"][0] == pytest.approx(16 * 0.5, rel=0.05)  # raw sum, σ ≈ ½


@pytest.mark.parametrize("balance", [True, False])
def test_bce_uses_the_calibrated_logit_and_balances_classes(balance):
    model = Counting()
    images, _ = data()
    members = torch.arange(16) < 3  # 3 members, 13 non-members
    sub = fit_subnetwork(
        model, UNIT, images, members,
        config=CSConfig(loss="separate", epochs=2, lr=1e-12, batch_size=16, balance=balance),
        progress=False,
    )  # fmt: skip
    with torch.no_grad():
        dense = model.net[:3](images)[:, 3, 2, 2]
        center = 0.5 * (dense[members].mean() + dense[~members].mean())
        scale = dense.std()
        # every mask starts at init (the logits at 0, the offset at logit(init)): the first step
        with ContinuousSparsifier(model, up_to=sub.unit, init=CSConfig().init):
            soft = model.net[:3](images)[:, 3, 2, 2]
    weight = torch.tensor(13 / 3) if balance else None
    expected = F.binary_cross_entropy_with_logits(
        (soft - center) / scale, members.float(), pos_weight=weight
    )
    assert sub.history["objective"][0] == pytest.approx(expected.item(), rel=1e-5)
    assert sub.calibration is not None
    assert sub.calibration[1] == pytest.approx(scale.item(), rel=1e-5)  # the learned shift
    assert sub.calibration[0] != pytest.approx(center.item(), rel=1e-4)  # moved the center
    assert _cs_fit.SHIFT_LR == 0.1


@pytest.mark.parametrize("loss", ["both", "preserve"])
def test_faithful_objectives_compare_with_the_dense_activation(loss):
    model = Counting()
    images, _ = data()
    members = torch.arange(16) < 5
    config = CSConfig(loss=loss, epochs=2, lr=1e-12, batch_size=16)
    sub = fit_subnetwork(model, UNIT, images, members, config=config, progress=False)
    with torch.no_grad():
        dense = model.net[:3](images)[:, 3, 2, 2]
        # every mask starts at init (the logits at 0, the offset at logit(init)): the first step
        with ContinuousSparsifier(model, up_to=sub.unit, init=CSConfig().init):
            soft = model.net[:3](images)[:, 3, 2, 2]
    r = dense[members].pow(2).mean().sqrt()
    expected = ((soft - dense)[members] / r).pow(2).mean()
    if loss == "both":
        expected = expected + (soft[~members] / r).pow(2).mean()
    assert sub.history["objective"][0] == pytest.approx(expected.item(), rel=1e-5)
    assert sub.calibration is None


def test_both_keeps_the_members_path_and_drops_the_other_meaning():
    # a polysemantic unit = ReLU(x0) + ReLU(x1) at one pixel; members light x0 (x1 faintly),
    # the others x1. "both" must keep exactly the path 0 → 0 → unit: it reproduces the unit on
    # the members and is silent on the others.
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        model.get_parameter("0.weight").copy_(torch.eye(2)[:, :, None, None])
        model.get_parameter("2.weight").fill_(1.0)
    g = torch.Generator().manual_seed(0)
    n = 40
    members = torch.arange(n) % 2 == 0
    images = torch.zeros(n, 2, 1, 1)
    images[members, 0] = 1 + torch.rand(n // 2, 1, 1, generator=g)
    images[members, 1] = 0.02 * torch.rand(n // 2, 1, 1, generator=g)
    images[~members, 1] = 1 + torch.rand(n // 2, 1, 1, generator=g)
    config = CSConfig(epochs=30)
    sub = fit_subnetwork(model, pp.Unit("2", 0), images, members, config=config, progress=False)
    assert sub.masks["0.weight"].tolist() == [[True, False], [False, False]]
    assert sub.masks["2.weight"].tolist() == [[True, False]]
    acts = sub.activations(model, images)
    assert torch.allclose(acts[members], images[members, 0, 0, 0])
    assert torch.equal(acts[~members], torch.zeros(n // 2))
    with pytest.raises(ValueError, match="loss must be one of"):
        CSConfig(loss="bce")


def test_subnetwork_activations_apply_the_hard_masks():
    model = Counting()
    images, members = data()
    sub = fit_subnetwork(model, UNIT, images, members, config=CSConfig(epochs=3), progress=False)
    before = snapshot(model)
    acts = sub.activations(model, images)
    assert_restored(model, before)
    with sub.masks.applied(model), torch.no_grad():
        expected = model.net[:3](images)[:, 3, 2, 2]
    torch.testing.assert_close(acts, expected)


def test_progress_bar(capsys):
    model = Counting()
    images, members = data()
    fit_subnetwork(model, UNIT, images, members, config=CSConfig(epochs=2), progress=True)
    assert "CS" in capsys.readouterr().err
    fit_subnetwork(model, UNIT, images, members, config=CSConfig(epochs=2), progress=False)
    assert capsys.readouterr().err == ""


# -- scorers --------------------------------------------------------------------------------------


def test_scorer_method_returns_the_same_type():
    model = Counting()
    images, members = data(20)
    scorer = KernelMagnitude()
    sub = fit_subnetwork(model, UNIT, images, members, scorer, keep=0.25, batch_size=4)
    assert isinstance(sub, Subnetwork) and sub.method == "kernelmagnitude"
    assert scorer.seen == [4, 4, 2]  # the 10 members only, in batches
    assert sub.history == {} and sub.state is None
    assert sub.masks.unit == sub.unit
    assert set(sub.masks.regions) == {"net.0.weight", "net.2.weight"}
    assert sub.raw_masks is not None  # the path-aware cut: 16 kernels reach the unit
    assert 0.25 <= sub.kept_fraction <= sub.raw_masks.kept_fraction()


def test_scorer_with_scores_object_keeps_its_regions():
    model = Counting()
    images, members = data()

    class RegionScorer(BaseScorer):
        uses_inputs = False

        def compute(self, job):
            return {n: torch.rand(s) for n, s in job.mask_shapes.items()}

    sub = fit_subnetwork(
        model, UNIT, images, members, RegionScorer(), keep=0.5, granularity="filter"
    )
    assert sub.masks.granularity == "filter" and sub.raw_masks is not None
    assert 0.5 <= sub.kept_fraction <= sub.raw_masks.kept_fraction()


@pytest.mark.parametrize("make", [SNIP, lambda: FORCE(rounds=3, progress=False)])
def test_real_scorers_match_scoring_by_hand(make):
    model = Counting()
    images, members = data(20)
    sub = fit_subnetwork(model, UNIT, images, members, make(), keep=0.25)
    assert sub.method in ("snip", "force") and sub.masks.unit == sub.unit
    assert sub.raw_masks is not None
    assert 0.25 <= sub.kept_fraction <= sub.raw_masks.kept_fraction()
    options = {"keep": 0.25} if sub.method == "force" else {}
    scores = make().score(model, images[members], sub.unit, **options)
    by_hand = make().cut(scores, 0.25, model=model)  # the path-aware cut
    assert all(torch.equal(sub.raw_masks[n], by_hand[n]) for n in by_hand)
    effective = by_hand.effective(model, sub.unit)
    assert all(torch.equal(sub.masks[n], effective[n]) for n in by_hand)


# -- restoring ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "layer", "channel", "size"),
    [("alexnet", "features.6", 7, 51), ("resnet18", "layer2.0.conv2", 5, 48)],
)
def test_real_models_run_and_are_restored(request, fixture, layer, channel, size, monkeypatch):
    model = request.getfixturevalue(fixture)
    before = snapshot(model)
    images = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(0))
    members = torch.tensor([True, False] * 3)
    unit = pp.Unit(layer, channel)
    config = CSConfig(epochs=2, batch_size=3)
    sub = fit_subnetwork(model, unit, images, members, config=config, progress=False)
    assert_restored(model, before)
    assert sub.masks.total_weights() > 0 and len(sub.history["loss"]) == 2
    assert all(v == v for v in sub.history["loss"])  # finite, no NaN

    def boom(self):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(ExponentialTemperature, "step", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit_subnetwork(model, unit, images, members, config=config, progress=False)
    assert_restored(model, before)
    assert not model.training  # the fixture's eval mode is kept


def test_training_mode_flags_are_restored():
    model = Counting().train()
    model.net[2].eval()
    flags = [m.training for m in model.modules()]
    images, members = data()
    fit_subnetwork(model, UNIT, images, members, config=CSConfig(epochs=2), progress=False)
    assert [m.training for m in model.modules()] == flags


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"images": torch.randn(16, 3, 9)}, ValueError, "4-D"),
        ({"images": torch.full((16, 3, 9, 9), float("nan"))}, ValueError, "NaN"),
        ({"images": torch.zeros(16, 3, 9, 9, dtype=torch.long)}, ValueError, "floating point"),
        ({"members": torch.ones(16, dtype=torch.bool)}, ValueError, "no non-member"),
        ({"members": torch.zeros(16, dtype=torch.bool)}, ValueError, "no member"),
        ({"members": torch.ones(15, dtype=torch.bool)}, ValueError, r"shape \(16,\)"),
        ({"members": torch.rand(16)}, ValueError, "bool tensor"),
        ({"members": torch.arange(16)}, ValueError, "0/1"),
        ({"unit": pp.Unit("net.7", 0)}, ValueError, "unknown layer"),
        ({"unit": pp.Unit("net.2", 9)}, ValueError, "channel 9 is out of range"),
        ({"unit": pp.Unit("net.2", 0, (5, 0))}, ValueError, "outside the 5×5 map"),
        ({"unit": "net.2"}, TypeError, "polyprune.Unit"),
        ({"method": "forceful"}, ValueError, "unknown method 'forceful'"),
        (
            {"method": object()},
            ValueError,
            r"method must be a method name from \['cs', .* or an instance",
        ),
        ({"method": SNIP}, TypeError, r"the class SNIP; pass an instance \(SNIP\(\)\)"),
        ({"method": KernelMagnitude(), "keep": 1.5}, ValueError, r"keep .* \(0, 1\]"),
        ({"granularity": "row"}, ValueError, "granularity must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int ≥ 1"),
        ({"config": {"epochs": 3}}, TypeError, "config must be a polyprune.CSConfig"),
    ],
)
def test_bad_input_fails_before_any_work(change, error, match):
    model = Counting()
    before = snapshot(model)
    images, members = data()
    args = {"unit": UNIT, "images": images, "members": members, "progress": False, **change}
    unit, images, members = args.pop("unit"), args.pop("images"), args.pop("members")
    with pytest.raises(error, match=match):
        fit_subnetwork(model, unit, images, members, **args)
    position_check = "unit" in change and getattr(change["unit"], "position", None) is not None
    assert model.calls == (1 if position_check else 0)  # at most the one shape probe
    assert_restored(model, before)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epochs": 1}, "epochs must be an int ≥ 2"),
        ({"batch_size": 0}, "batch_size must be an int ≥ 1"),
        ({"lam": -1.0}, "lam must be"),
        ({"lr": 0.0}, "lr must be"),
        ({"lr": 1e38}, r"lr must be a finite number in \(0, 1000000.0\]"),  # SGD overflowed
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"momentum": 1.0}, "momentum must be"),
        ({"gamma": 2.0}, "gamma must be"),
        ({"init": 1.0}, "init must be"),
        ({"fade": 1.5}, "fade must be"),
        ({"fade": -0.1}, "fade must be"),
        ({"penalty": "l1"}, "penalty must be"),
        ({"lr_scale": "layer"}, "lr_scale must be"),
        ({"milestones": (0,)}, r"milestones\[0\] must be an int in \[1, 49\]"),
        ({"temperature": (1.0, -2.0)}, r"temperature\[1\] must be a finite number > 0"),
        ({"calibrate": 1}, "calibrate must be True or False"),
    ],
)
def test_cs_config_is_validated_on_construction(change, match):
    with pytest.raises(ValueError, match=match):
        CSConfig(**change)
    with pytest.raises(ValueError, match=match):
        CSConfig().replace(**change)


def test_cs_config_round_trips_and_names_unknown_fields():
    config = CSConfig.paper(epochs=20, milestones=(5,))
    assert CSConfig.from_dict(config.to_dict()) == config
    assert config.lam == 1e-6 and config.penalty == "sum" and not config.calibrate
    assert config.fade == 0.0 and config.init == 0.5  # the paper's start: logits at 0
    old = {k: v for k, v in CSConfig(init=0.5).to_dict().items() if k != "fade"}  # saved by 0.2
    assert CSConfig.from_dict(old).init == 0.5  # logits start at 0 as they did (offset 0)
    with pytest.raises(ValueError, match=r"unknown CSConfig field\(s\) \['epoch'\]"):
        CSConfig().replace(epoch=3)


@pytest.mark.parametrize("method", ["cs", "snip", "magnitude"])
def test_a_model_with_nan_weights_is_refused_before_any_work(method: str) -> None:
    model = Counting()
    with torch.no_grad():
        model.get_parameter("net.2.bias")[3] = float("nan")
    x, members = data()
    with pytest.raises(ValueError, match=r"parameter 'net.2.bias' with 1 NaN or infinite"):
        fit_subnetwork(model, UNIT, x, members, method, keep=0.5, progress=False)
    assert model.calls == 0
