"""The planted-superposition network: its truth masks are exact, kernel by kernel.

Masks are applied here by multiplying weights directly (not through ``Masks.applied``), except in
the one test that checks the two agree.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from helpers import layer_output
from torch import Tensor, nn

from polyprune import Masks, ReceptiveField, zoo
from polyprune.zoo import _planted

PAIRS = [("hstripes", "rings"), ("vstripes", "blobs"), ("dstripes", "checker")]
LAYER, CHANNEL = zoo.PLANTED_TARGET
K = len(zoo.CONCEPTS)
#: the default planted network and its truth masks (the ``default`` fixture)
Planted = tuple[zoo.PlantedNetwork, dict[str, Masks]]


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    return zoo.concept_images(700, size=zoo.PLANTED_SIZE, seed=11)  # 100 per concept


@pytest.fixture(scope="module")
def default() -> Planted:
    return zoo.planted_network()


def _centre(model: nn.Module, images: Tensor) -> Tensor:
    """Pre-ReLU centre activation of every channel of the target layer: ``(N, C)``."""
    out = layer_output(model, LAYER, images)
    return out[:, :, (out.shape[2] - 1) // 2, (out.shape[3] - 1) // 2]


def _means(
    model: nn.Module, data: tuple[Tensor, Tensor], concepts: tuple[str, ...] = zoo.CONCEPTS
) -> dict[str, Tensor]:
    """Mean centre activation of every target-layer channel on each concept's images: (C,) each."""
    images, labels = data
    keep = torch.isin(labels, torch.tensor([zoo.CONCEPTS.index(c) for c in concepts]))
    act, labels = _centre(model, images[keep]), labels[keep]
    return {c: act[labels == zoo.CONCEPTS.index(c)].mean(0) for c in concepts}


def _masked(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with each weight multiplied by its (kernel) mask."""
    twin = copy.deepcopy(model)
    params = dict(twin.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask[..., None, None].to(params[name].dtype))
    return twin


def test_plain_sequential_cnn_with_the_documented_target(default: Planted) -> None:
    model, _ = default
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2 + [nn.Conv2d, nn.ReLU]
    assert isinstance(model.get_submodule(LAYER), nn.Conv2d) and not model.training
    assert (LAYER, CHANNEL) == ("features.6", 0)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    n_out = 1 + len(model.distractors) + len(model.concepts)
    assert out.shape == (2, n_out, 8, 8) and float(out.min()) >= 0
    assert model.concepts == ("hstripes", "rings") and len(model.distractors) == 2
    assert not set(model.distractors) & set(model.concepts)


def test_receptive_field_of_the_target(default: Planted) -> None:
    rf = ReceptiveField.of(default[0], LAYER, input_size=(zoo.PLANTED_SIZE, zoo.PLANTED_SIZE))
    assert (rf.size, rf.stride, rf.output_size, rf.center) == ((18, 18), (4, 4), (8, 8), (3, 3))


def test_cross_kernels_sparse_and_bounded_in_effect(default: Planted) -> None:
    model, _ = default
    plain, _ = zoo.planted_network(cross=0.0)
    images = _planted._calibration()
    h = plain.features[:3](images)  # input of features.3 (cross kernels do not change it)
    for index in (3, 6):
        with torch.no_grad():
            weight = model.get_parameter(f"features.{index}.weight")
            planted = plain.get_parameter(f"features.{index}.weight")
            blocks = planted.flatten(2).abs().sum(2) > 0
            cross = weight - planted
            present = cross.flatten(2).abs().sum(2) > 0
            assert not bool((present & blocks).any())
            assert 0.05 < float(present[~blocks].float().mean()) < 0.25
            rms = [
                torch.nn.functional.conv2d(h, w, padding=1).pow(2).mean((0, 2, 3)).sqrt()
                for w in (planted, cross)
            ]
            assert bool((rms[1] <= 0.05 * rms[0] + 1e-6).all()), index
            h = model.features[index : index + 3](h)


def test_truth_masks_shape_region_and_disjointness(default: Planted) -> None:
    model, truth = default
    convs = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(truth) == {"hstripes", "rings"}
    a, b = truth["hstripes"], truth["rings"]
    for masks in (a, b):
        assert isinstance(masks, Masks) and masks.granularity == "kernel"
        assert set(masks) == set(convs)
        assert masks.unit is not None
        assert (masks.unit.layer, masks.unit.channel) == zoo.PLANTED_TARGET
        for name, mask in masks.items():
            assert mask.dtype == torch.bool and mask.shape == convs[name].weight.shape[:2]
        # outside the region (other output channels of the target layer) everything is kept
        region = masks.regions[f"{LAYER}.weight"]
        assert bool(region[CHANNEL].all()) and not bool(region[CHANNEL + 1 :].any())
        assert bool(masks[f"{LAYER}.weight"][~region].all())
    for name in a:
        region = a.regions.get(name, torch.ones_like(a[name]))
        assert not bool((a[name] & b[name] & region).any()), name  # disjoint circuits
    # truth kernels are the non-zero kernels of a block (at most 8 filters, 8x8 and 8 kernels)
    assert 0 < a.kept_weights() <= 8 * 3 * 9 + 8 * 8 * 9 + 8 * 9
    plain, truth_plain = zoo.planted_network(cross=0.0)  # same layout, no cross kernels
    for name, weight in plain.named_parameters():
        if name.endswith("weight"):
            nonzero = weight.detach().flatten(2).abs().sum(2) > 0
            for concept, masks in truth_plain.items():
                assert torch.equal(masks[name], truth[concept][name])
                region = masks.regions[name]
                assert bool(nonzero[masks[name] & region].all()), (concept, name)


def test_every_planted_filter_matters(default: Planted, data: tuple[Tensor, Tensor]) -> None:
    model, truth = default
    images = data[0][:200]
    base = _centre(model, images)[:, CHANNEL]
    circuit = truth["rings"]["features.3.weight"]
    for name, alive in (
        ("features.0.weight", circuit.any(0)),
        ("features.3.weight", circuit.any(1)),
    ):
        for ch in alive.nonzero().flatten().tolist():
            mask = torch.ones(dict(model.named_parameters())[name].shape[:2], dtype=torch.bool)
            mask[ch] = False
            change = (_centre(_masked(model, {name: mask}), images)[:, CHANNEL] - base).abs()
            assert float(change.max()) > 0.005, (name, ch)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pair", PAIRS)
def test_each_circuit_alone_keeps_its_concept_and_drops_the_other(
    pair: tuple[str, str], seed: int, data: tuple[Tensor, Tensor]
) -> None:
    model, truth = zoo.planted_network(pair, seed=seed)
    full = _means(model, data, pair)
    assert min(float(full[c][CHANNEL]) for c in pair) > 0.5  # the unit fires for both concepts
    for concept in pair:
        other = next(c for c in pair if c != concept)
        alone = _means(_masked(model, truth[concept]), data, pair)
        assert alone[concept][CHANNEL] >= 0.9 * full[concept][CHANNEL], (concept, alone, full)
        assert alone[other][CHANNEL] < 0.1 * full[other][CHANNEL], (concept, alone, full)


@pytest.mark.parametrize("pair", PAIRS)
def test_ablating_a_circuit_removes_only_its_concept(
    pair: tuple[str, str], data: tuple[Tensor, Tensor]
) -> None:
    model, truth = zoo.planted_network(pair)
    full = _means(model, data, pair)
    for concept in pair:
        other = next(c for c in pair if c != concept)
        masks = truth[concept]
        keep_rest = {n: ~m | ~masks.regions[n] for n, m in masks.items()}
        ablated = _means(_masked(model, keep_rest), data, pair)
        assert ablated[concept][CHANNEL] < 0.1 * full[concept][CHANNEL], (concept, ablated, full)
        assert ablated[other][CHANNEL] >= 0.9 * full[other][CHANNEL], (concept, ablated, full)


@pytest.mark.parametrize("pair", PAIRS)
def test_distractors_drive_their_own_channel_not_the_target(
    pair: tuple[str, str], data: tuple[Tensor, Tensor]
) -> None:
    model, _ = zoo.planted_network(pair, distractors=3, seed=4)
    means = _means(model, data)
    lowest_concept = min(float(means[c][CHANNEL]) for c in pair)
    for i, distractor in enumerate(model.distractors):
        assert means[distractor][CHANNEL] < 0.25 * lowest_concept, (distractor, means)
        own = torch.stack([means[c][1 + i] for c in zoo.CONCEPTS])
        assert zoo.CONCEPTS[int(own.argmax())] == distractor


def test_masks_applied_agrees_with_direct_multiplication(
    default: Planted, data: tuple[Tensor, Tensor]
) -> None:
    model, truth = default
    images = data[0][:64]
    direct = _centre(_masked(model, truth["rings"]), images)
    with truth["rings"].applied(model):
        via_masks = _centre(model, images)
    torch.testing.assert_close(via_masks, direct)


def test_circuits_cannot_be_read_off_weight_magnitudes(default: Planted) -> None:
    model, truth = default
    plain, _ = zoo.planted_network(cross=0.0)  # same seed: same layout, no cross kernels
    for name in ("features.3.weight", f"{LAYER}.weight"):
        norms = dict(model.named_parameters())[name].detach().flatten(2).norm(dim=2)
        blocks = dict(plain.named_parameters())[name].detach().flatten(2).norm(dim=2) > 0
        cross = norms[(norms > 0) & ~blocks]
        target = (truth["hstripes"][name] | truth["rings"][name]) & truth["rings"].regions[name]
        assert cross.numel() > 0 and bool(blocks[target].all())
        assert float(cross.max()) > float(norms[target].min()), name


def test_cross_zero_is_block_diagonal_and_seed_is_deterministic(default: Planted) -> None:
    model, truth = zoo.planted_network(cross=0.0, distractors=0)
    union = {n: truth["hstripes"][n] | truth["rings"][n] for n in truth["hstripes"]}
    for name, weight in model.named_parameters():
        if name.endswith("weight"):
            outside = ~union[name]
            assert float(weight.detach().flatten(2).abs().sum(2)[outside].sum()) == 0.0
    again, truth_again = zoo.planted_network()
    for (k, v), (k2, v2) in zip(
        default[0].state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(
        truth_again["rings"]["features.3.weight"], default[1]["rings"]["features.3.weight"]
    )
    other, _ = zoo.planted_network(seed=1)
    assert not torch.equal(
        other.get_parameter("features.0.weight"), default[0].get_parameter("features.0.weight")
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concepts": ("rings",)}, "at least 2 concepts"),
        ({"concepts": ("rings", "zebras")}, r"unknown concept.*valid names"),
        ({"concepts": ("rings", "rings")}, "must not repeat"),
        ({"distractors": 6}, r"distractors must be an int in \[0, 5\]"),
        ({"distractors": -1}, "distractors must be"),
        ({"seed": -2}, r"seed must be an int in \[0, "),
        ({"cross": -0.5}, "cross"),
        ({"cross": float("nan")}, "cross"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zoo.planted_network(**kwargs)


def test_readout_channels_are_monosemantic_neighbours(default: Planted) -> None:
    model, _ = default
    assert model.readouts == (3, 4)
    images, labels = zoo.concept_images(200, concepts=model.concepts, size=32, seed=5)
    with torch.no_grad():
        out = model.features[:7](images)
    centre = out[:, :, 3, 3]
    for i, concept in enumerate(model.concepts):
        own = centre[labels == i, model.readouts[i]].mean()
        other = centre[labels != i, model.readouts[i]].mean()
        # the readout copies the concept's detector: as strong as the target on it, not the other
        assert own > 0.5 * centre[labels == i, 0].mean() and other < 0.25 * own, concept
