"""Receptive fields through explicit padding (``F.pad``, asymmetric), nearest-neighbour
upsampling (HRNet's fusion layers) and gates that reshape their pooled map (ResNeSt's split
attention, attention after a squeeze-excitation gate) (issue 24 §4). Exactness is checked by
equality of activations: the unit on its crop against the unit on the whole image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import check_crops, crops_are_exact, layer_output
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

import polyprune as pp
from polyprune.receptive_field import ReceptiveFieldError


def _positive(model: nn.Module, seed: int = 0) -> nn.Module:
    """Positive conv weights, so that every pixel of a window moves the unit (for the probe)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    return model.eval()


class Fuse(nn.Module):
    """HRNet-style fusion: a coarser branch, upsampled (nearest) and added to the trunk, then
    padded asymmetrically and convolved."""

    def __init__(
        self, trunk: list[tuple[int, int]], factor: int, pad: tuple[int, int, int, int],
        head: tuple[int, int], functional: bool, mode: str = "nearest",
    ) -> None:  # fmt: skip
        super().__init__()
        self.trunk = nn.Sequential(
            *(nn.Conv2d(3, 3, k, stride=s, padding=k // 2) for k, s in trunk)
        )
        self.down = nn.Conv2d(3, 3, 3, stride=factor, padding=1)
        self.up = nn.Upsample(scale_factor=factor, mode=mode)
        self.pad = nn.ZeroPad2d(pad)
        self.head = nn.Conv2d(3, 3, head[0], stride=head[1])
        self.factor, self.functional, self.mode = factor, functional, mode
        self.padding = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        low = self.down(h)
        if self.functional:
            up = F.interpolate(low, scale_factor=float(self.factor), mode=self.mode)
            return self.head(F.pad(h + up, self.padding))
        return self.head(self.pad(h + self.up(low)))


@given(
    trunk=st.lists(st.tuples(st.sampled_from([1, 3, 5]), st.integers(1, 2)), max_size=3),
    factor=st.integers(2, 3),
    pad=st.tuples(*(st.integers(-1, 3) for _ in range(4))),
    head=st.tuples(st.integers(1, 4), st.integers(1, 2)),
    functional=st.booleans(),
    mode=st.sampled_from(["nearest", "nearest-exact"]),
    multiple=st.integers(2, 4),
    unit=st.tuples(st.integers(0, 40), st.integers(0, 40)),
)
def test_nearest_upsampling_and_asymmetric_padding_crop_exactly(
    trunk, factor, pad, head, functional, mode, multiple, unit
):
    stride = 1
    for _, s in trunk:
        stride *= s
    step = stride * factor  # every map divides evenly, as HRNet's at 32·n pixels
    size = step * max(multiple, -(-16 // step))
    model = _positive(Fuse(trunk, factor, pad, head, functional, mode))
    assume(min(layer_output(model, "head", torch.zeros(1, 3, size, size)).shape[2:]) > 1)
    crops_are_exact(model, "head", size, [unit, (0, 0), (40, 40), (0, 40)])


def test_the_coarse_branch_sets_the_crop_lattice():
    model = _positive(Fuse([(3, 2)], 2, (0, 1, 1, 0), (3, 1), functional=False))
    rf = pp.ReceptiveField.of(model, "head", 32)
    assert rf.stride == (2, 2) and rf._lattice == (4, 4)
    # the branch: 3×3 (stride 2) then 3×3 at stride 4 sees 7 pixels from -3; upsampled by 2,
    # positions 2i and 2i+1 share that span: a box of 9 from -5 at stride 2. The head's 3×3
    # adds 2·2; the padding shifts the start by its top (1 row) and left (0 columns) amounts
    assert rf.size == (13, 13) and rf.start == (-7, -5)
    assert check_crops(model, "head", torch.rand(3, 3, 32, 32)) == "crop"
    data = rf.to_dict()  # saved with a study: the crop is cut the same after loading
    assert data["lattice"] == [4, 4] and data["anchored"] is True
    again = pp.ReceptiveField.from_dict(data)
    assert all(again.crop_box((i, i)) == rf.crop_box((i, i)) for i in range(15))
    # unit (3, 3): its field ends at row 12 (32 - 12 = 20, on the lattice of 4) and at column
    # 14, moved out to 16 so that the crop keeps the image's width modulo 4
    assert rf.box((3, 3)) == (1, 1, 12, 12) and rf.crop_box((3, 3)) == (0, 0, 12, 16)


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear"), "'bilinear' upsampling"),
        (lambda x: F.interpolate(x, size=(40, 40)), "fixed size"),
        (lambda x: F.interpolate(x, scale_factor=1.5), "not by an integer factor"),
        (lambda x: F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2)), "computed from the map"),
        (lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"), "mode='reflect'"),
    ],
)
def test_resampling_without_an_exact_field_is_refused_naming_the_node(op, match):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.out = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(op(self.a(x)))

    with pytest.raises(ReceptiveFieldError, match=match):
        pp.ReceptiveField.of(Net(), "out", 20)


def test_upsampling_a_map_finer_than_its_stride_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Upsample(scale_factor=2), nn.Conv2d(3, 3, 1))
    with pytest.raises(ReceptiveFieldError, match="fractional pixels"):
        pp.ReceptiveField.of(net, "2", 20)


class SplitAttention(nn.Module):
    """ResNeSt's split-attention gate: radix paths, pooled, a softmax over the radix axis of the
    reshaped 1×1 gate, multiplied back onto the paths and summed."""

    def __init__(self, radix: int = 2, channels: int = 4) -> None:
        super().__init__()
        self.radix, self.channels = radix, channels
        self.conv = nn.Conv2d(3, channels * radix, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(channels, 8, 1), nn.Conv2d(8, channels * radix, 1)
        self.out = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b, rc, h, w = x.shape
        x = x.reshape((b, self.radix, rc // self.radix, h, w))
        gap = x.sum(dim=1).mean((2, 3), keepdim=True)
        attn = self.fc2(torch.relu(self.fc1(gap)))
        attn = attn.view(b, 1, self.radix, -1).transpose(1, 2)
        attn = F.softmax(attn, dim=1).reshape(b, -1).view(b, -1, 1, 1)
        out = (x * attn.reshape((b, self.radix, rc // self.radix, 1, 1))).sum(dim=1)
        return self.out(out.contiguous())


def test_a_split_attention_gate_makes_units_see_the_whole_image():
    model = SplitAttention().eval()
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    assert check_crops(model, "conv", x) == "crop"  # before the gate
    assert check_crops(model, "out", x) == "whole image"
    rf = pp.ReceptiveField.of(model, "out", 20)
    assert rf.whole_image and rf.box((0, 0)) == (0, 0, 20, 20)
    assert pp.ReceptiveField.probe(model, "out", 20, (0, 0)) == (0, 0, 20, 20)


class Attention(nn.Module):
    """Global self-attention over the positions of a map (CoAtNet's transformer blocks),
    optionally after a squeeze-excitation gate (as CoAtNet's MBConv stages)."""

    def __init__(self, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        self.conv, self.gate = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.qkv, self.out = nn.Conv2d(4, 12, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.gated:
            x = x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, 3, c, h * w).unbind(1)
        attn = (q.transpose(-2, -1) @ k).softmax(dim=-1)
        return self.out(x + (v @ attn.transpose(-2, -1)).view(b, c, h, w))


def test_attention_after_a_gate_sees_the_whole_image_and_without_one_is_refused():
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    assert check_crops(Attention(gated=True).eval(), "out", x) == "whole image"
    with pytest.raises(ReceptiveFieldError, match="after a flatten every unit"):
        pp.ReceptiveField.of(Attention(gated=False), "out", 12)
