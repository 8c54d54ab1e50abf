"""Property tests: on random stacks of Conv2d / MaxPool2d / AvgPool2d, crops are exact and the
analytic field agrees with the empirical probe."""

from __future__ import annotations

import pytest
import torch
from helpers import layer_output
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import polyprune as pp


@st.composite
def layers(draw: st.DrawFn, channels: int) -> nn.Module:
    kind = draw(st.sampled_from(["conv", "conv", "max", "avg"]))
    k = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    if kind == "conv":
        dilation = draw(st.integers(1, 2))
        padding = draw(st.integers(0, (dilation * (k - 1)) // 2 + 1))
        return nn.Conv2d(channels, channels, k, stride=stride, padding=padding, dilation=dilation)
    k = max(k, 2)
    padding = draw(st.integers(0, k // 2))
    ceil_mode = draw(st.booleans())
    if kind == "max":
        dilation = draw(st.integers(1, 2))
        assume(padding <= k // 2)
        return nn.MaxPool2d(k, stride, padding, dilation=dilation, ceil_mode=ceil_mode)
    count_include_pad = draw(st.booleans())
    return nn.AvgPool2d(
        k, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad
    )


@st.composite
def stacks(draw: st.DrawFn) -> tuple[nn.Sequential, int]:
    depth = draw(st.integers(1, 5))
    modules: list[nn.Module] = []
    for _ in range(depth):
        modules.append(draw(layers(2)))
        if draw(st.booleans()):
            modules.append(nn.ReLU())
    model = nn.Sequential(*modules).eval()
    size = draw(st.integers(16, 48))
    return model, size


def _last_spatial_layer(model: nn.Sequential) -> str:
    return str(max(i for i, m in enumerate(model) if not isinstance(m, nn.ReLU)))


def _map(model: nn.Sequential, layer: str, size: int) -> tuple[int, int] | None:
    try:
        out = layer_output(model, layer, torch.zeros(1, 2, size, size))
    except RuntimeError:  # the stack shrinks the map to nothing at this size
        return None
    return (out.shape[2], out.shape[3]) if out.shape[2] * out.shape[3] > 1 else None


def _prepared(model: nn.Sequential, size: int, seed: int) -> tuple[str, tuple[int, int]]:
    """The stack's last spatial layer and its map size (skipping stacks with no usable map);
    conv weights made positive so that every window position matters."""
    layer = _last_spatial_layer(model)
    hw = _map(model, layer, size)
    assume(hw is not None)
    assert hw is not None
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    return layer, hw


@given(stacks(), st.data())
def test_crop_is_exact_on_random_stacks(stack, data):
    model, size = stack
    layer, hw = _prepared(model, size, seed=0)
    rf = pp.ReceptiveField.of(model, layer, size)
    assert rf.output_size == hw
    x = torch.randn(2, 2, size, size)
    full = layer_output(model, layer, x)
    h, w = hw
    i = data.draw(st.sampled_from([0, h - 1, (h - 1) // 2, data.draw(st.integers(0, h - 1))]))
    j = data.draw(st.sampled_from([0, w - 1, (w - 1) // 2, data.draw(st.integers(0, w - 1))]))
    box = rf.box((i, j))
    if box[0] >= box[2] or box[1] >= box[3]:  # a unit that sees only padding
        with pytest.raises(ValueError, match="only padding"):
            rf.crop(x, (i, j))
        return
    crop = rf.crop(x, (i, j))
    got = layer_output(model, layer, crop.images)[..., crop.unit[0], crop.unit[1]]
    torch.testing.assert_close(got, full[..., i, j], rtol=1e-5, atol=1e-5)
    top, left, bottom, right = rf.crop_box((i, j))
    assert top % rf.stride[0] == 0 and left % rf.stride[1] == 0
    assert top <= box[0] and left <= box[1] and bottom >= box[2] and right >= box[3]


@given(stacks(), st.data())
def test_probe_agrees_on_random_stacks(stack, data):
    model, size = stack
    layer, hw = _prepared(model, size, seed=1)
    rf = pp.ReceptiveField.of(model, layer, size)
    unit = (data.draw(st.integers(0, hw[0] - 1)), data.draw(st.integers(0, hw[1] - 1)))
    top, left, bottom, right = rf.box(unit)
    if top >= bottom or left >= right:  # a unit that sees only padding: nothing to measure
        with pytest.raises(ValueError, match="no input pixel"):
            pp.ReceptiveField.probe(model, layer, size, unit)
        return
    # exact also at borders: padding-only windows, dilation holes, rows skipped by floor mode
    assert pp.ReceptiveField.probe(model, layer, size, unit) == (top, left, bottom, right)
