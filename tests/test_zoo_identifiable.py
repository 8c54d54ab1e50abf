"""The identifiable planted variant (``zoo.planted_network(identifiable=True)``): gated, pruned
detectors, so each true circuit reproduces the unit exactly on its concept, is silent on the
other, and needs every one of its kernels."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import polyprune as pp
from polyprune import zoo
from polyprune._unit_io import unit_activations
from polyprune.zoo import _gated

PAIRS = [("hstripes", "rings"), ("vstripes", "blobs"), ("dstripes", "checker")]


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    return zoo.concept_images(700, size=zoo.PLANTED_SIZE, seed=11)  # 100 per concept


def _centre(model: zoo.PlantedNetwork, images: Tensor, masks: pp.Masks | None = None) -> Tensor:
    """The target unit at the map centre (pre-ReLU), optionally with ``masks`` applied."""
    return unit_activations(model, pp.Unit(*model.target), images, masks)


def test_structure_target_and_truth_masks() -> None:
    model, truth = zoo.planted_network(identifiable=True)
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2 + [nn.Conv2d, nn.ReLU] * 2
    assert model.target == ("features.8", 0) and model.features[8].kernel_size == (1, 1)
    rf = pp.ReceptiveField.of(model, "features.8", input_size=(32, 32))
    assert (rf.size, rf.center) == ((18, 18), (3, 3))
    a, b = truth["hstripes"], truth["rings"]
    assert a.unit == pp.Unit("features.8", 0) and set(a) == {
        f"features.{i}.weight" for i in (0, 3, 6, 8)
    }
    region = a.regions["features.8.weight"]
    assert bool(region[0].all()) and not bool(region[1:].any())
    for name in a:
        inside = a.regions[name]
        assert not bool((a[name] & b[name] & inside).any()), name  # disjoint circuits
        nonzero = dict(model.named_parameters())[name].detach().flatten(2).abs().sum(2) > 0
        assert bool(nonzero[a[name] & inside].all()), name  # a circuit kernel is non-zero
    # the same seed draws the same distractors and channel shuffle as the plain network; the
    # pruned detectors keep a subset of its kernels
    plain, plain_truth = zoo.planted_network(cross=0)
    assert plain.distractors == model.distractors and plain.readouts == model.readouts
    for name in ("features.0.weight", "features.3.weight"):
        assert bool((a[name] <= plain_truth["hstripes"][name]).all())
        assert 0 < int(a[name].sum()) < int(plain_truth["hstripes"][name].sum())


def test_gates_are_exactly_zero_off_concept_on_the_calibration_images() -> None:
    images, labels = _gated.calibration()
    for k, (name, (state, theta)) in enumerate(_gated.gated_detectors().items()):
        s = _gated._centre(state, images)
        own = labels == k
        assert name == zoo.CONCEPTS[k] and theta > 0
        assert float(s[~own].max()) < theta  # ReLU(s − θ) is exactly 0 off concept
        # and open on its own: dots' detector is the weakest (22 %; a distractor only)
        assert float((s[own] > theta).float().mean()) > (0.2 if name == "dots" else 0.7), name


@pytest.mark.parametrize("pair", PAIRS)
def test_each_circuit_reproduces_its_concept_and_is_silent_on_the_other(
    pair: tuple[str, str], data: tuple[Tensor, Tensor]
) -> None:
    model, truth = zoo.planted_network(pair, identifiable=True, seed=3)
    images, labels = data
    full = _centre(model, images)
    for i, concept in enumerate(pair):
        own = labels == zoo.CONCEPTS.index(concept)
        other = labels == zoo.CONCEPTS.index(pair[1 - i])
        alone = _centre(model, images, truth[concept])
        assert float((full[own] > 0).float().mean()) > 0.8, concept  # the unit fires
        # on fresh images the other concept's gate leaks (is > 0) on at most 2 % of them
        exact = alone[own] == full[own]
        assert float(exact.float().mean()) >= 0.98, concept
        torch.testing.assert_close(alone[own][exact], full[own][exact], rtol=0, atol=0)
        assert float((alone[other] == 0).float().mean()) >= 0.98, concept


def test_every_circuit_kernel_is_necessary(data: tuple[Tensor, Tensor]) -> None:
    pair = ("hstripes", "rings")
    model, truth = zoo.planted_network(pair, identifiable=True, seed=1)
    images, labels = data
    keep = torch.isin(labels, torch.tensor([zoo.CONCEPTS.index(c) for c in pair]))
    images, labels = images[keep], labels[keep]
    full = _centre(model, images)
    images, labels = images[full > 0], labels[full > 0]  # crops the unit fires on, as top-k
    for concept in pair:
        members = labels == zoo.CONCEPTS.index(concept)
        masks = truth[concept]
        loss, effects = pp.ablation.removal_effects(model, pp.Unit(*model.target), images,
                                                    members, masks)  # fmt: skip
        inside = torch.cat([effects[n][masks[n] & masks.regions[n]] for n in masks])
        assert loss < 1e-3, concept  # the truth reproduces the unit (up to gate leaks)
        assert float(inside.min()) > 0, concept  # no circuit kernel is free


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"identifiable": True, "cross": 1.0}, r"cross must be 0 or None with identifiable"),
        ({"identifiable": "yes"}, "identifiable"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        zoo.planted_network(**kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_shipped_gated_detector_is_what_build_gives() -> None:
    state, theta = _gated.build("rings")
    shipped, shipped_theta = _gated.gated_detectors()["rings"]
    assert theta == pytest.approx(shipped_theta, rel=1e-4)
    for key, value in shipped.items():
        torch.testing.assert_close(state[key], value)
