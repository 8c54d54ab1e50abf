"""Receptive fields through timm's CNN building blocks (issue 24 §4): its squeeze-excitation
gates (``x.mean((2, 3), keepdim=True)``), heads fx cannot trace (control flow on a shape),
"SAME" padding computed at run time and weight-standardized convolutions. Every crop is checked
against the unit on whole images (:func:`helpers.check_crops`)."""

from __future__ import annotations

import pytest
import torch
from helpers import check_crops, crops_are_exact, layer_output
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import polyprune as pp

timm = pytest.importorskip("timm")


def _x(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _timm(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def test_a_mean_pooled_gate_makes_units_see_the_whole_image():
    model = _timm("test_efficientnet")  # SqueezeExcite: x * sigmoid(conv(x.mean((2, 3), True)))
    assert check_crops(model, "blocks.2.0.conv_pwl", _x()) == "crop"  # before the first gate
    assert check_crops(model, "blocks.4.0.conv_pwl", _x()) == "whole image"
    rf = pp.ReceptiveField.of(model, "blocks.3.0.conv_pwl", 64)
    assert rf.whole_image and rf.box() == (0, 0, 64, 64)


def test_weight_standardized_convolutions_crop_exactly():
    model = _timm("test_nfnet")  # ScaledStdConv2d: weights normalized inside forward
    assert check_crops(model, "stages.0.0.conv1", _x()) == "crop"


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Conv2d(4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 3:  # control flow on a shape, as timm's VGG head: fx cannot trace it
            x = nn.functional.adaptive_avg_pool2d(x, 3)
        return self.fc(x)


def test_an_untraceable_module_after_the_layer_does_not_stop_the_crop():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), _Head())
    assert check_crops(model.eval(), "2", _x(3, 24)) == "crop"
    rf = pp.ReceptiveField.of(model, "2", 24)
    assert rf.size == (5, 5) and rf.stride == (2, 2)
    with pytest.raises(ValueError, match="cannot trace Sequential"):  # the layer inside it
        pp.ReceptiveField.of(model, "3.fc", 24)


def test_same_padding_at_run_time_crops_exactly_also_with_a_stride():
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import MaxPool2dSame

    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(3, 4, 4), nn.ReLU(), MaxPool2dSame(3, 1), Conv2dSame(4, 4, 3), nn.ReLU(),
        Conv2dSame(4, 4, 3, stride=2),
    ).eval()  # fmt: skip
    rf = pp.ReceptiveField.of(model, "3", 20)
    assert rf.size == (8, 8) and rf.output_size == (20, 20)  # 4 + 2 + 2, "SAME": no shrinking
    assert check_crops(model, "3", _x(3, 20)) == "crop"
    # stride 2: the padding depends on the map's size (0 before at 20 pixels, 1 at 21), so the
    # crop ends a multiple of the stride before the image's edge and is padded alike
    for size in (20, 21):
        rf = pp.ReceptiveField.of(model, "5", size)
        assert rf.size == (10, 10) and rf.start == (-3 - size % 2, -3 - size % 2)
        assert all((size - end) % 2 == 0 for end in rf.crop_box((0, 0))[2:])
        assert check_crops(model, "5", _x(3, size)) == "crop"


@st.composite
def same_stacks(draw: st.DrawFn) -> nn.Sequential:
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    layers: list[nn.Module] = []
    for _ in range(draw(st.integers(1, 4))):
        k, s = draw(st.integers(1, 5)), draw(st.integers(1, 3))
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg"]))
        if kind == "conv":
            layers.append(Conv2dSame(3, 3, k, stride=s, dilation=draw(st.integers(1, 2))))
        else:
            layers.append((MaxPool2dSame if kind == "max" else AvgPool2dSame)(max(k, 2), s))
    return nn.Sequential(*layers)


@given(same_stacks(), st.integers(12, 40), st.tuples(st.integers(0, 40), st.integers(0, 40)))
def test_same_padding_crops_exactly_on_random_stacks(model, size, unit):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    layer = str(len(model) - 1)
    assume(min(layer_output(model.eval(), layer, torch.zeros(1, 3, size, size)).shape[2:]) > 1)
    crops_are_exact(model, layer, size, [unit, (0, 0), (40, 40)])


class _Paths(nn.Module):
    """Selective-kernel style: two kernel paths stacked on a new axis, then summed over it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.stack([self.a(x), self.b(x)], dim=1).sum(1))


def test_stacked_paths_have_the_union_of_their_fields():
    torch.manual_seed(0)
    model = _Paths().eval()
    rf = pp.ReceptiveField.of(model, "out", 20)
    assert rf.size == (5, 5) and rf.stride == (1, 1)
    assert check_crops(model, "out", _x(3, 20)) == "crop"


def test_a_hybrid_conv_attention_model_below_its_size_is_refused_in_one_line():
    model = _timm("coatnet_0_rw_224")  # relative-position tables built for 224 px
    for crop in (True, False):
        with pytest.raises(ValueError, match="the model was built for") as info:
            unit = pp.Unit("stages.2.blocks.0.mlp.fc2", 0)
            pp.top_activating(model, unit, _x(2, 96), k=2, crop=crop, progress=False)
        assert "MaxxVit does not run on images of shape (3, 96, 96)" in str(info.value)
        assert "RuntimeError: The size of tensor a (36) must match" in str(info.value)
        assert "\n" not in str(info.value)
