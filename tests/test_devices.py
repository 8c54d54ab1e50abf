"""The model may live on any device; images come from the CPU as a DataLoader gives them.

Each test runs on every device present: the CPU always, ``cuda`` where a GPU is (CI has none;
on a GPU machine these are the checks that matter). Results come back on the CPU (so they can
be saved, plotted and compared), the model comes back exactly as it was on its device, and the
numbers agree with the CPU's within float tolerance (a GPU's kernels differ in the last bits).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polyprune as pp
from polyprune import zoo

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
UNIT = pp.Unit("features.6", 0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return zoo.concept_images(240, size=zoo.PLANTED_SIZE, seed=11)[0]


def _on(device: str) -> nn.Module:
    return zoo.planted_network()[0].eval().to(device)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor], device: str) -> bool:
    after = model.state_dict()
    return all(
        after[k].device.type == device and torch.equal(after[k], v) for k, v in before.items()
    ) and not any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_top_activating_reads_cpu_images_into_a_model_on_the_device(device, images):
    model = _on(device)
    before = _state(model)
    top = pp.top_activating(model, UNIT, images, k=30, progress=False)
    reference = pp.top_activating(_on("cpu"), UNIT, images, k=30, progress=False)
    assert top.values.device.type == "cpu" and top.codes.device.type == "cpu"
    torch.testing.assert_close(top.values, reference.values, rtol=1e-4, atol=1e-5)
    assert _unchanged(model, before, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["snip", "cs"])
def test_fitting_on_the_device_returns_cpu_masks_and_restores_the_model(device, method, images):
    model = _on(device)
    before = _state(model)
    x = images[:48]
    members = torch.arange(48) % 2 == 0
    config = pp.CSConfig(epochs=2)
    sub = pp.fit_subnetwork(
        model, UNIT, x, members, method, keep=0.1, config=config, progress=False
    )
    assert all(sub.masks[name].device.type == "cpu" for name in sub.masks)
    assert 0 < sub.masks.kept_fraction() <= 1
    assert _unchanged(model, before, device)
    with sub.masks.applied(model):  # the CPU masks apply to the model where it lives
        assert next(model.parameters()).device.type == device
        model(x[:2].to(device))
    assert _unchanged(model, before, device)


@pytest.mark.parametrize("device", DEVICES)
def test_a_study_and_a_scan_run_with_the_model_on_the_device(device, images):
    model = _on(device)
    before = _state(model)
    result = pp.study(model, UNIT, images, k=60, methods=("snip",), progress=False)
    assert result.top.values.device.type == "cpu"
    assert _unchanged(model, before, device)
    found = pp.scan(model, "features.6", images, k=60, progress=False)
    reference = pp.scan(_on("cpu"), "features.6", images, k=60, progress=False)
    for channel in range(3):
        got, want = found.top(channel).values, reference.top(channel).values
        assert got.device.type == "cpu"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert _unchanged(model, before, device)
