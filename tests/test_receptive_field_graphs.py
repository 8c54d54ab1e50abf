"""ReceptiveField on branching graphs, and the errors where a field is undefined."""

from __future__ import annotations

import pytest
import torch
from helpers import crops_are_exact, layer_output
from torch import nn

import polyprune as pp


class TwoBranch(nn.Module):
    """Inception-style: a 3×3 and a 5×5 branch, concatenated, then a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Sequential(nn.Conv2d(4, 4, 5, padding=2), nn.ReLU())
        self.mix = nn.Conv2d(8, 4, 1)
        self.head = nn.Conv2d(4, 2, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        return self.head(self.mix(y) + x)


class MismatchedAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.b = nn.Sequential(nn.MaxPool2d(2), nn.Upsample(scale_factor=2))
        self.out = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.interpolate(self.a(x), scale_factor=2.0) + x)


class Flattening(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 == 0:  # control flow on a traced value: not symbolically traceable
            return self.conv(x)
        return self.conv(-x)


def test_branching_field_is_union_and_crop_exact():
    torch.manual_seed(0)
    model = TwoBranch().eval()
    rf = pp.ReceptiveField.of(model, "mix", 32)
    # stem 3/2 → field 3, stride 2, start -1; the 5×5 branch adds 4·2: size 11, start -5
    assert (rf.size, rf.stride, rf.start) == ((11, 11), (2, 2), (-5, -5))
    head = pp.ReceptiveField.of(model, "head", 32)
    assert (head.size, head.stride) == ((15, 15), (4, 4))
    x = torch.randn(2, 3, 32, 32)
    for layer, field in (("mix", rf), ("head", head)):
        for unit in [field.center, (0, 0), (field.output_size[0] - 1, 1)]:
            crop = field.crop(x, unit)
            want = layer_output(model, layer, x)[..., unit[0], unit[1]]
            got = layer_output(model, layer, crop.images)[..., crop.unit[0], crop.unit[1]]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert pp.ReceptiveField.probe(model, layer, 32) == field.box()


def test_unknown_layer_lists_close_names(alexnet):
    with pytest.raises(ValueError, match=r"features\.10"):
        pp.ReceptiveField.of(alexnet, "features.100", 224)


def test_nearest_interpolation_meets_the_finer_map_on_its_lattice():
    rf = pp.ReceptiveField.of(MismatchedAdd(), "out", 32)  # stride-2 map upsampled by 2, + x
    assert rf.stride == (1, 1) and rf._lattice == (2, 2) and rf.size == (4, 4)
    crops_are_exact(MismatchedAdd().eval(), "out", 32, [(0, 0), (5, 6), (31, 31)])


def test_flatten_then_linear_is_refused(alexnet):
    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match="after a flatten every unit"):
        pp.ReceptiveField.of(Flattening(), "fc", 16)
    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match="flatten"):
        pp.ReceptiveField.of(alexnet, "classifier.1", 224)


def test_mismatched_strides_at_an_add_are_refused():
    class Strides(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, stride=2, padding=1)
            self.b = nn.Conv2d(3, 3, 1, stride=1)
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.a(x) + self.b(x)[..., ::2, ::2])

    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match="getitem"):
        pp.ReceptiveField.of(Strides(), "c", 16)


def test_adaptive_pooling_uneven_is_refused_even_is_exact(alexnet):
    # AlexNet's AdaptiveAvgPool2d((6, 6)) is the identity at 224 but pools 7 → 6 at 256
    assert pp.ReceptiveField.of(alexnet, "avgpool", 224).size == (195, 195)
    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match="avgpool"):
        pp.ReceptiveField.of(alexnet, "avgpool", 256)
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AdaptiveMaxPool2d(4)).eval()
    rf = pp.ReceptiveField.of(model, "1", 16)
    assert (rf.size, rf.stride) == ((6, 6), (4, 4))


def test_untraceable_model_points_to_measure():
    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match=r"ReceptiveField\.measure"):
        pp.ReceptiveField.of(DataDependent(), "conv", 16)
    assert pp.ReceptiveField.probe(DataDependent(), "conv", 16, (0, 0)) == (0, 0, 3, 3)


def test_reflect_padding_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match="reflect"):
        pp.ReceptiveField.of(model, "0", 8)


def test_bad_sizes_and_units(alexnet):
    with pytest.raises(ValueError, match="input_size"):
        pp.ReceptiveField.of(alexnet, "features.6", (224, 0))
    with pytest.raises(ValueError, match=r"does not run on images of shape \(3, 16, 16\)"):
        pp.ReceptiveField.of(alexnet, "features.10", 16)
    rf = pp.ReceptiveField.of(alexnet, "features.10", 224)
    with pytest.raises(ValueError, match=r"unit\[0\] must be an int in \[0, 12\], got 13"):
        rf.box((13, 0))
    with pytest.raises(ValueError, match="4-D"):
        rf.crop(torch.rand(3, 224, 224))
    with pytest.raises(ValueError, match="input_size"):
        rf.crop(torch.rand(1, 3, 200, 200))
    with pytest.raises(ValueError, match="mode"):
        rf.crop(torch.rand(1, 3, 224, 224), mode="resize")  # type: ignore[arg-type]
    tiny = pp.ReceptiveField.of(alexnet, "features.12", 67)
    assert tiny.output_size == (1, 1)
    with pytest.raises(ValueError, match="1×1"):
        tiny.crop(torch.rand(1, 3, 67, 67))


def test_shared_module_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    with pytest.raises(pp.receptive_field.ReceptiveFieldError, match="called 2 times"):
        pp.ReceptiveField.of(Twice(), "conv", 8)
