"""Feature visualization raises the unit; figures are written; the model is left as found."""

from __future__ import annotations

import numpy as np
import torch
from helpers import no_hooks_anywhere
from matplotlib.image import imread
from torch import nn

import polyprune as pp


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3),
    ).eval()  # fmt: skip


def _unit_value(model: nn.Module, unit: pp.Unit, x: torch.Tensor) -> torch.Tensor:
    with pp.ActivationRecorder(model, unit.layer) as rec:
        return rec.run(x)[unit.layer][:, unit.channel]


def test_optimised_image_excites_the_unit_far_above_random_images():
    model = _net()
    unit = pp.Unit("5", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = pp.visualize(model, unit, size=32, steps=60, progress=False)
    assert image.shape == (1, 3, 32, 32) and image.min() >= 0 and image.max() <= 1
    random = _unit_value(model, unit, torch.rand(64, 3, 32, 32))
    assert _unit_value(model, unit, image).item() > random.mean() + 5 * random.std()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and no_hooks_anywhere(model)


def test_seeded_and_masks_change_the_result():
    model = _net()
    unit = pp.Unit("5", 2)
    a = pp.visualize(model, unit, size=24, steps=10, seed=3, progress=False)
    b = pp.visualize(model, unit, size=24, steps=10, seed=3, progress=False)
    assert torch.equal(a, b)
    half = pp.Masks({"3.weight": torch.arange(64).reshape(8, 8) % 2 == 0}, "kernel")
    c = pp.visualize(model, unit, masks=half, size=24, steps=10, seed=3, progress=False)
    assert not torch.equal(a, c)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())


def test_figures_are_written(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(12, 3, 16, 16)
    labels = np.array([0] * 5 + [1] * 5 + [-1] * 2)
    crops = pp.plot.crops(images, labels, tmp_path / "crops.png", per_cluster=4)
    hist = pp.plot.histograms(
        {"original": torch.randn(12), "cs → cluster 0": torch.randn(12)}, labels,
        tmp_path / "sub" / "hist.png",
    )  # fmt: skip
    m = pp.Masks({"a.weight": torch.tensor([[True, False]]), "b.weight": torch.tensor([[True]])})
    kept = pp.plot.kept_per_layer({"cs": m, "snip": m}, tmp_path / "kept.png")
    vis = pp.plot.images({"original": images[:1], "cluster 0": images[1:2]}, tmp_path / "v.png")
    for path in (crops, hist, kept, vis):
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels.std() > 0.01  # not a blank canvas
