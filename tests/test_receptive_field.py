"""ReceptiveField: exact sizes on known models, exact crops (checked by activations), probe."""

from __future__ import annotations

import pytest
import torch
from helpers import layer_output
from torch import nn

import polyprune as pp


def _assert_crop_exact(model: nn.Module, layer: str, x: torch.Tensor, unit: tuple[int, int]):
    rf = pp.ReceptiveField.of(model, layer, (x.shape[2], x.shape[3]))
    full = layer_output(model, layer, x)[..., unit[0], unit[1]]
    crop = rf.crop(x, unit)
    cropped = layer_output(model, layer, crop.images)[..., crop.unit[0], crop.unit[1]]
    scale = full.abs().max().clamp_min(1e-12)
    assert ((cropped - full).abs().max() / scale) <= 1e-5, (layer, unit)


@pytest.mark.parametrize(
    ("layer", "size", "stride", "start", "output"),
    [
        ("features.0", 11, 4, -2, 55),
        ("features.6", 99, 16, -34, 13),
        ("features.8", 131, 16, -50, 13),
        ("features.10", 163, 16, -66, 13),
        ("features.12", 195, 32, -66, 6),
    ],
)
def test_alexnet_paper_layers(alexnet, layer, size, stride, start, output):
    rf = pp.ReceptiveField.of(alexnet, layer, (224, 224))
    assert rf.size == (size, size)
    assert rf.stride == (stride, stride)
    assert rf.start == (start, start)
    assert rf.output_size == (output, output)
    assert rf.center == ((output - 1) // 2,) * 2


def test_resnet18_known_fields(resnet18):
    # residual adds: the field is the union of both branches (the conv path is the wider one)
    assert pp.ReceptiveField.of(resnet18, "layer1.0", 224).size == (27, 27)
    assert pp.ReceptiveField.of(resnet18, "layer2", 224).size == (99, 99)
    assert pp.ReceptiveField.of(resnet18, "layer4", 224).size == (435, 435)
    assert pp.ReceptiveField.of(resnet18, "layer4", 224).stride == (32, 32)


@pytest.mark.parametrize("layer", ["features.6", "features.8", "features.10"])
def test_alexnet_crop_exact_center_and_corners(alexnet, layer):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224)
    for unit in [(6, 6), (0, 0), (12, 12), (0, 12), (7, 1)]:
        _assert_crop_exact(alexnet, layer, x, unit)


def test_alexnet_center_crop_shape(alexnet):
    rf = pp.ReceptiveField.of(alexnet, "features.10", 224)
    crop = rf.crop(torch.rand(1, 3, 224, 224))
    # RF box rows 30..192; start moved back to the 16-pixel lattice: rows 16..192
    assert rf.box() == (30, 30, 193, 193)
    assert crop.images.shape[2:] == (177, 177)
    assert crop.unit == (5, 5)


@pytest.mark.parametrize(
    ("model_name", "layer", "units"),
    [
        ("vgg11", "features.5", [(7, 7), (0, 0), (15, 15)]),
        ("vgg11", "features.12", [(3, 3), (0, 7)]),
        ("resnet18", "layer1.0.conv2", [(15, 15), (0, 0), (31, 2)]),
        ("resnet18", "layer2", [(7, 7), (15, 0)]),
        ("resnet18", "layer3.0.bn1", [(3, 4), (0, 0)]),
    ],
)
def test_torchvision_crop_exact(request, model_name, layer, units):
    model = request.getfixturevalue(model_name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 128, 128)
    for unit in units:
        _assert_crop_exact(model, layer, x, unit)


@pytest.mark.parametrize(
    ("model_name", "layer", "size", "unit"),
    [
        ("alexnet", "features.10", 224, None),
        ("alexnet", "features.8", 224, (0, 12)),
        ("vgg11", "features.12", 128, (0, 0)),
        ("resnet18", "layer2", 128, None),
        ("resnet18", "layer3.1", 128, (7, 0)),
    ],
)
def test_probe_agrees_with_analytic_box(request, model_name, layer, size, unit):
    model = request.getfixturevalue(model_name)
    rf = pp.ReceptiveField.of(model, layer, size)
    # trials=4 (of the default 8) keeps float64 probing of big models quick
    assert pp.ReceptiveField.probe(model, layer, size, unit, trials=4) == rf.box(unit)


@pytest.mark.parametrize("unit", [None, (0, 0), (7, 7)])
def test_probe_search_step_alone_matches_analytic_box(unit):
    # the perturbation binary search (used when gradients miss the border) on its own
    from polyprune._graph.probe import Probe

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(4, 4), nn.Conv2d(3, 2, 3))
    rf = pp.ReceptiveField.of(model.eval(), "2", 40)
    probe = Probe(model, "2", unit, seed=0)
    assert probe.search(probe.images(2, 2, 40, 40)) == rf.box(unit)


def test_shrink_mode_is_the_papers_paste(alexnet):
    rf = pp.ReceptiveField.of(alexnet, "features.10", 224)
    x = torch.rand(2, 3, 224, 224)
    crop = rf.crop(x, mode="shrink")
    top, left, bottom, right = rf.box()
    assert crop.images.shape == x.shape and crop.unit == rf.center
    assert crop.images[..., :top, :].abs().sum() == 0
    assert crop.images[..., bottom:, :].abs().sum() == 0
    expected = torch.nn.functional.interpolate(
        x, size=(bottom - top, right - left), mode="bilinear", antialias=True
    )
    assert torch.equal(crop.images[..., top:bottom, left:right], expected)


def test_training_flags_restored(alexnet):
    alexnet.train()
    alexnet.features[1].eval()
    try:
        pp.ReceptiveField.of(alexnet, "features.6", 224)
        assert alexnet.training and not alexnet.features[1].training
        assert alexnet.features[2].training
    finally:
        alexnet.eval()
