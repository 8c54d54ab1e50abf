"""Inputs that gave a silently wrong answer (issue 20 §3): now a right one or a clear error."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import polyprune as pp
from polyprune import zoo

X = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 4, 3)
    ).eval()


# -- subnetworks and top-k's of another unit or model ------------------------------------------


def test_evaluate_refuses_subnetworks_fitted_for_another_unit():
    model, members = _net(), torch.arange(24) % 2 == 0
    sub = pp.fit_subnetwork(model, pp.Unit("3", 1), X, members, "snip", keep=0.3, progress=False)
    labels = members.long()
    with pytest.raises(ValueError, match=r"subnetworks\[0\] was fitted for 3\[1\], not .* 3\[2\]"):
        pp.evaluate(model, pp.Unit("3", 2), X, labels, {0: sub})
    with pytest.raises(ValueError, match=r"subnetworks\[0\] was fitted for 3\[1\]"):
        pp.evaluate(model, pp.Unit("3", 2), X, labels, {0: sub.masks})
    # masks that lost their unit are still told apart by their regions
    bare = pp.Masks(dict(sub.masks), "kernel", regions=sub.masks.regions)
    with pytest.raises(ValueError, match=r"regions .* differ from those of 3\[2\] at '3.weight'"):
        pp.evaluate(model, pp.Unit("3", 2), X, labels, {0: bare})
    for ok in (sub, sub.masks, bare):  # the unit they were fitted for is evaluated
        assert pp.evaluate(model, pp.Unit("3", 1), X, labels, {0: ok}).clusters[0].kept_fraction > 0


def test_study_refuses_a_top_recorded_on_another_model():
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(200, size=zoo.PLANTED_SIZE, seed=4)
    unit = pp.Unit(*zoo.PLANTED_TARGET)
    top = pp.top_activating(model, unit, images, k=40, keep_inputs=True, progress=False)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.get_parameter("features.3.weight").mul_(1.5)  # same architecture, other weights
    with pytest.raises(ValueError, match=r"top does not belong to this model: features\.6\[0\]"):
        pp.study(other, unit, images, top=top, methods=["snip"], progress=False)
    result = pp.study(model, unit, images, top=top, methods=["snip"], progress=False)
    assert result.top is top


# -- NaN activations ---------------------------------------------------------------------------


class _Nan(nn.Module):
    """Finite weights, NaN activations (as from an overflow)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def _refused_before_fitting(model: nn.Module, layer: str, match: str) -> None:
    """CS on unit ``layer``[2] raises ``match``; the model's state is as it was (NaN == NaN)."""
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        pp.fit_subnetwork(
            model, pp.Unit(layer, 2), X, torch.arange(24) < 12, "cs",
            config=pp.CSConfig(epochs=2), progress=False,
        )  # fmt: skip
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(
        bool(((before[k] == v) | (before[k].isnan() & v.isnan())).all()) for k, v in after.items()
    )


def test_cs_refuses_a_unit_that_is_nan_before_fitting():
    model = _net()
    model.insert(2, _Nan())  # finite weights
    _refused_before_fitting(model, "4", r"4\[2\] is NaN or infinite on 24 of 24 images")


def test_cs_refuses_a_nan_parameter_before_any_forward():
    model = _net()
    with torch.no_grad():
        model.get_parameter("0.bias")[0] = float("nan")  # would reach unit 3[2]: NaN everywhere
    _refused_before_fitting(model, "3", r"model has parameter '0.bias' with 1 NaN")


def test_cs_stops_with_a_clear_error_when_the_loss_turns_nan(monkeypatch):
    from polyprune._cs import loss
    from polyprune.sparsify import CSLoss

    monkeypatch.setattr(loss._LOSSES, "_classes", dict(loss._LOSSES._classes))  # this test's
    calls = []

    class NanFromTheSecondBatch(CSLoss, name="nan_from_the_second_batch"):
        def __call__(
            self, a: torch.Tensor, d: torch.Tensor, y: torch.Tensor, shift: torch.Tensor,
            ctx: loss.LossContext,
        ) -> torch.Tensor:  # fmt: skip
            calls.append(1)
            out = loss.both(a, d, y, shift, ctx)
            return out * float("nan") if len(calls) > 1 else out

    model = _net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"the CS loss became nan in epoch 1 .* diverged"):
        pp.fit_subnetwork(
            model, pp.Unit("3", 2), X, torch.arange(24) < 12, "cs",
            config=pp.CSConfig(loss="nan_from_the_second_batch", epochs=3, batch_size=8),
            progress=False,
        )  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_separation_refuses_nan_and_infinite_activations(bad):
    with pytest.raises(ValueError, match=r"members holds 1 NaN or infinite activation\(s\) of 2"):
        pp.evaluation.separation(torch.tensor([bad, 1.0]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"others holds 2 NaN"):
        pp.evaluation.separation(torch.tensor([2.0, 1.0]), torch.tensor([bad, bad]))


# -- masks that would not be the subnetwork described ------------------------------------------


def test_to_torch_prune_refuses_tied_weights_as_applied_does():
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 3))
    model[2].weight = model[0].weight  # one Parameter, used twice
    masks = pp.Masks({"0.weight": torch.eye(3, dtype=torch.bool)}, "kernel")
    for export in (masks.applied, masks.to_torch_prune):
        with pytest.raises(ValueError, match=r"'0.weight' is tied: the same Parameter is also"):
            export(model)
    assert not torch.nn.utils.prune.is_pruned(model)  # nothing half-done


@pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning")
@pytest.mark.parametrize("method", ["snip", "cs"])
def test_a_weight_normed_conv_is_refused_not_left_out(method):
    model = _net()
    torch.nn.utils.weight_norm(model[0])  # old style: weight recomputed from weight_g, weight_v
    options = {"config": pp.CSConfig(epochs=2)} if method == "cs" else {"keep": 0.3}
    with pytest.raises(ValueError, match=r"'0' \(Conv2d\) has a weight that is not a Parameter"):
        pp.fit_subnetwork(
            model, pp.Unit("3", 2), X, torch.arange(24) < 12, method, progress=False, **options
        )
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())


@pytest.mark.parametrize("how", ["probe", "measure"])
def test_receptive_field_probe_refuses_a_meta_model(how):
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3))
    with pytest.raises(
        ValueError, match=r"model has parameter .* on the meta device \(no values\)"
    ):
        getattr(pp.ReceptiveField, how)(model, "2", 16)


@pytest.mark.parametrize("call", ["effective", "removal_effects"])
def test_an_unknown_unit_layer_is_named_with_the_closest_names(call: str) -> None:
    """Masks.effective and removal_effects never checked the unit's layer: a typo gave a bare
    'never called' GraphError / 'unknown layer' without the names that exist."""
    model, truth = zoo.planted_network()
    masks = next(iter(truth.values()))
    unit = pp.Unit("features.66", 0)
    with pytest.raises(ValueError, match=r"unit.*features\.6"):
        if call == "effective":
            masks.effective(model, unit)
        else:
            x, y = zoo.concept_images(20, size=zoo.PLANTED_SIZE, seed=1)
            pp.ablation.removal_effects(model, unit, x, y < 3, masks)
