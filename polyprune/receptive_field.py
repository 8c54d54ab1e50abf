"""Exact receptive fields of a layer's units, and crops that keep a unit's activation unchanged.

The field is computed over the model's data-flow graph (:mod:`torch.fx`), so residual additions,
concatenations and parallel branches are handled exactly; operations that make the field
undefined or non-uniform raise an error that names the node instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from . import _validate as valid
from ._data import as_images
from ._graph.field import ReceptiveFieldError
from ._graph.interpret import propagate
from ._graph.probe import Probe as _Probe
from ._graph.probe import map_size as _map_size
from ._graph.probe import measure as _measure
from ._graph.trace import check_layer
from ._model import first_in_channels

__all__ = ["Crop", "ReceptiveField", "ReceptiveFieldError"]


class Crop(NamedTuple):
    """Images cropped to a unit's receptive field, and where that unit sits in the crop's map."""

    images: Tensor
    unit: tuple[int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """The exact receptive field of the units of one layer, for one input size.

    Sizes are bounding boxes in input pixels, per spatial dimension ``(height, width)``.

    Attributes
    ----------
    layer : str
        Module name, as in ``model.named_modules()``.
    input_size : tuple[int, int]
        The image size ``(H, W)`` this field was computed for.
    size : tuple[int, int]
        Extent of the input region one unit can see (padding included).
    stride : tuple[int, int]
        Input-pixel distance between neighbouring units of the map.
    start : tuple[int, int]
        Input coordinate of the top-left pixel seen by unit ``(0, 0)``; negative where the
        field reaches into padding.
    output_size : tuple[int, int]
        ``(H, W)`` of the layer's map at ``input_size``.
    whole_image : bool
        Every unit depends on every pixel (e.g. behind squeeze-and-excitation gating, which
        pools the whole map into a per-channel gate): ``size`` is then the image size and a
        unit's crop is the whole image.
    measured : bool
        Measured with :meth:`measure` (by probing units) rather than derived from the graph.

    Examples
    --------
    >>> import torchvision, polyprune as pp
    >>> rf = pp.ReceptiveField.of(torchvision.models.alexnet(), "features.10", (224, 224))
    >>> rf.size, rf.stride, rf.output_size, rf.center
    ((163, 163), (16, 16), (13, 13), (6, 6))
    """

    layer: str
    input_size: tuple[int, int]
    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]
    output_size: tuple[int, int]
    whole_image: bool = False
    measured: bool = False
    _spans: tuple[tuple[tuple[int, int], ...], ...] = field(default=(), repr=False, compare=False)
    _lattice: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _anchored: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        model: nn.Module,
        layer: str,
        input_size: int | tuple[int, int],
        *,
        in_channels: int | None = None,
    ) -> ReceptiveField:
        """Compute the receptive field of ``layer`` for images of ``input_size``.

        ``in_channels`` defaults to the first declared ``in_channels`` in the model (3 if none).
        The model is run once on a zero image of that size (in eval mode, gradients off; every
        module's training flag is restored afterwards).

        Raises
        ------
        ValueError
            Unknown layer or invalid size, or the layer has no map at that input size.
        ReceptiveFieldError
            The model cannot be traced, or an operation makes the field undefined or non-uniform.
        """
        valid.model("model", model)
        check_layer(model, layer)
        size_hw = valid.size("input_size", input_size)
        channels = (
            first_in_channels(model)
            if in_channels is None
            else valid.integer("in_channels", in_channels, low=1)
        )
        return cls._derive(model, layer, size_hw, channels)

    @classmethod
    def _derive(
        cls, model: nn.Module, layer: str, size_hw: tuple[int, int], channels: int
    ) -> ReceptiveField:
        """:meth:`of` without its argument checks, for callers that made them (the layer
        checked once by the public call that plans a crop, the size and channels a batch's)."""
        field, out_shape = propagate(model, layer, size_hw, channels)
        if len(out_shape) != 4 or len(field.dims) != 2:
            raise ReceptiveFieldError(f"layer {layer!r} does not produce a 2-D map (N, C, H, W)")
        if field.dims != (2, 3):
            raise ValueError(
                f"layer {layer!r} outputs channels-last maps {out_shape} (its spatial axes are "
                f"{field.dims}): polyprune reads units of (N, C, H, W) maps; choose a layer after "
                "the permute back to channels-first"
            )
        whole = field.whole
        return cls(
            layer=layer,
            input_size=size_hw,
            size=size_hw if whole else (field.size[0], field.size[1]),
            stride=(field.stride[0], field.stride[1]),
            start=(0, 0) if whole else (field.start[0], field.start[1]),
            output_size=(int(out_shape[2]), int(out_shape[3])),
            whole_image=whole,
            _spans=tuple(
                tuple(zip(lo.tolist(), hi.tolist(), strict=True))
                for lo, hi in zip(field.lo, field.hi, strict=True)
            ),
            _lattice=(field.lattice[0], field.lattice[1]),
            _anchored=field.anchored,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the exact per-position spans included); see :meth:`from_dict`."""
        return {
            "layer": self.layer, "input_size": list(self.input_size), "size": list(self.size),
            "stride": list(self.stride), "start": list(self.start),
            "output_size": list(self.output_size), "whole_image": self.whole_image,
            "measured": self.measured, "spans": [[list(s) for s in dim] for dim in self._spans],
            "lattice": list(self._lattice or self.stride), "anchored": self._anchored,
        }  # fmt: skip

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> ReceptiveField:
        """The field of :meth:`to_dict`.

        Examples
        --------
        >>> import torchvision, polyprune as pp
        >>> rf = pp.ReceptiveField.of(torchvision.models.alexnet(), "features.10", 224)
        >>> again = pp.ReceptiveField.from_dict(rf.to_dict())
        >>> again == rf, again.box((0, 0)) == rf.box((0, 0))
        (True, True)
        """

        def pair(key: str) -> tuple[int, int]:
            return int(data[key][0]), int(data[key][1])

        spans = tuple(tuple((int(lo), int(hi)) for lo, hi in dim) for dim in data.get("spans", ()))
        return cls(
            str(data["layer"]), pair("input_size"), pair("size"), pair("stride"), pair("start"),
            pair("output_size"), bool(data.get("whole_image", False)),
            bool(data.get("measured", False)), spans,
            pair("lattice") if "lattice" in data else (), bool(data.get("anchored", False)),
        )  # fmt: skip

    @property
    def center(self) -> tuple[int, int]:
        """The unit in the middle of the map: ``((H - 1) // 2, (W - 1) // 2)``."""
        return (self.output_size[0] - 1) // 2, (self.output_size[1] - 1) // 2

    def _unit(self, unit: tuple[int, int] | None) -> tuple[int, int]:
        if unit is None:
            return self.center
        return valid.position("unit", unit, self.output_size)

    def box(self, unit: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the image pixels the unit depends on.

        Bottom and right are exclusive, so ``images[..., top:bottom, left:right]`` is the field.
        Exact also at the border: it is the uniform field clamped to the image, shrunk further
        where intermediate windows reach only into padding or floor-mode pooling skips the last
        rows. A unit that sees only padding has an empty box (``top >= bottom``).
        ``unit`` defaults to :attr:`center`.
        """
        i, j = self._unit(unit)
        if not self._spans:  # constructed by hand: the uniform field clamped to the image
            top, left = self.start[0] + i * self.stride[0], self.start[1] + j * self.stride[1]
            h, w = self.input_size
            return (
                max(top, 0),
                max(left, 0),
                min(top + self.size[0], h),
                min(left + self.size[1], w),
            )
        (top, last_row), (left, last_col) = self._spans[0][i], self._spans[1][j]
        if top > last_row or left > last_col:
            return 0, 0, 0, 0
        return top, left, last_row + 1, last_col + 1

    def covers_input(self, unit: tuple[int, int] | None = None) -> bool:
        """Whether the unit (default: :attr:`center`) depends on every pixel of the image.

        Then its crop is the whole image: cropping saves nothing (and needs no receptive field).
        """
        return self.box(unit) == (0, 0, *self.input_size)

    def crop_box(self, unit: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """The region :meth:`crop` cuts: the uniform field clamped to the image, with top/left
        moved back to the stride lattice. It contains :meth:`box`.

        Starting on a multiple of the stride keeps every intermediate map aligned with the full
        image's, and every window the unit depends on lies inside, so the unit's activation is
        unchanged; at the image border the crop is clamped, which keeps the same zero padding.
        After nearest-neighbour upsampling the lattice is the coarsest stride upstream; after
        padding computed from a map's size at run time (TensorFlow's "SAME" with a stride), the
        bottom/right edge also moves out to a multiple of the lattice from the image's edge, so
        every map of the crop is padded as the whole image's.
        """
        i, j = self._unit(unit)
        if self.whole_image:
            return (0, 0, *self.input_size)
        raw = (self.start[0] + i * self.stride[0], self.start[1] + j * self.stride[1])
        lattice = self._lattice or self.stride
        box = []
        for a in (0, 1):
            end, edge = min(raw[a] + self.size[a], self.input_size[a]), self.input_size[a]
            if self._anchored:
                end = edge - (edge - end) // lattice[a] * lattice[a]
            box.append((max(0, raw[a] // lattice[a] * lattice[a]), end))
        return box[0][0], box[1][0], box[0][1], box[1][1]

    def crop(
        self,
        images: Tensor,
        unit: tuple[int, int] | None = None,
        *,
        mode: Literal["exact", "shrink"] = "exact",
    ) -> Crop:
        """Cut ``images`` (N, C, H, W) down to what one unit sees.

        ``mode="exact"`` (default): the crop of :meth:`crop_box`; the layer's activation at
        ``Crop.unit`` on the crop equals its activation at ``unit`` on the full images.
        ``mode="shrink"``: the paper's own preprocessing, for faithful reproduction: the whole
        image is resized (bilinear, antialiased) into the unit's field box of a zero canvas of the
        original size; ``Crop.unit`` is then ``unit`` itself. This is not activation-preserving.

        Examples
        --------
        >>> import torch, torchvision, polyprune as pp
        >>> model = torchvision.models.alexnet().eval()
        >>> rf = pp.ReceptiveField.of(model, "features.10", (224, 224))
        >>> crop = rf.crop(torch.rand(2, 3, 224, 224))
        >>> tuple(crop.images.shape), crop.unit
        ((2, 3, 177, 177), (5, 5))
        """
        as_images(images)
        if tuple(images.shape[2:]) != self.input_size:
            raise ValueError(
                f"images are {tuple(images.shape[2:])} but this ReceptiveField was computed for "
                f"input_size {self.input_size}; compute it with ReceptiveField.of(..., "
                f"input_size={tuple(images.shape[2:])})"
            )
        if self.output_size == (1, 1):
            raise ValueError(
                f"the map of {self.layer!r} is 1×1 at input size {self.input_size}: its only unit "
                "sees the whole image, there is nothing to crop to"
            )
        i, j = self._unit(unit)
        top, left, bottom, right = self.box((i, j))
        if top >= bottom or left >= right:
            raise ValueError(
                f"unit {(i, j)} of {self.layer!r} sees only padding at input size "
                f"{self.input_size}: no pixel of the image is in its field"
            )
        if mode == "shrink":
            canvas = images.new_zeros(images.shape)
            small = F.interpolate(
                images, size=(bottom - top, right - left), mode="bilinear", antialias=True
            )
            canvas[..., top:bottom, left:right] = small
            return Crop(canvas, (i, j))
        if mode != "exact":
            raise ValueError(f"mode must be 'exact' or 'shrink', got {mode!r}")
        top, left, bottom, right = self.crop_box((i, j))
        unit_in_crop = (i - top // self.stride[0], j - left // self.stride[1])
        return Crop(images[..., top:bottom, left:right], unit_in_crop)

    @classmethod
    def measure(
        cls,
        model: nn.Module,
        layer: str,
        input_size: int | tuple[int, int],
        *,
        in_channels: int | None = None,
        trials: int = 8,
        seed: int = 0,
    ) -> ReceptiveField:
        """The field of ``layer`` measured by probing two units, for models ``of`` cannot trace.

        The center unit's box (:meth:`probe`) gives the size, its distance to a diagonal
        neighbour's box the stride. The result crops like a derived field (:meth:`crop`); since
        it rests on measurements, :func:`~polyprune.top_activating` checks on the first batch
        that a measured crop keeps the unit's activation, and uses whole images if not. Measure
        at an input size where the center unit's field lies inside the image.

        Examples
        --------
        >>> import torch, polyprune as pp
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2),
        ...                           torch.nn.Conv2d(2, 2, 3))
        >>> rf = pp.ReceptiveField.measure(net, "2", 24)
        >>> rf.size, rf.stride, rf.measured, rf.size == pp.ReceptiveField.of(net, "2", 24).size
        ((8, 8), (2, 2), True, True)
        """
        valid.floating_model("model", model)
        valid.integer("trials", trials, low=1)
        valid.seed("seed", seed)
        check_layer(model, layer)
        valid.model("model", model)
        size_hw = valid.size("input_size", input_size)
        channels = (
            first_in_channels(model)
            if in_channels is None
            else valid.integer("in_channels", in_channels, low=1)
        )
        size, stride, start, out = _measure(model, layer, size_hw, channels, trials, seed)
        return cls(layer, size_hw, size, stride, start, out, measured=True)

    @staticmethod
    def probe(
        model: nn.Module,
        layer: str,
        input_size: int | tuple[int, int],
        unit: tuple[int, int] | None = None,
        *,
        in_channels: int | None = None,
        trials: int = 8,
        seed: int = 0,
    ) -> tuple[int, int, int, int]:
        """Measure a unit's field empirically, without tracing: ``(top, left, bottom, right)``.

        Runs the model in float64 and eval mode through :func:`torch.func.functional_call`
        (float64 copies of the parameters of the modules that run; the model itself keeps its
        parameters, and its training flags are restored):

        1. input gradients of the unit (all channels at that position, randomly weighted) on
           ``trials`` random images; every pixel with a non-zero gradient is in the field, so
           their bounding box is an inner bound;
        2. all pixels outside that box are replaced by large random values: if the unit does not
           change, nothing outside can change it and the box is exact;
        3. otherwise (a gradient was zero at the border, e.g. behind max pooling), binary search
           over blocks of rows and columns finds the first and last that change the unit.

        The result is the clamped field box (exclusive bottom/right), comparable to :meth:`box`.
        ``unit`` defaults to the map's center.

        Raises
        ------
        ValueError
            If the unit does not respond to any pixel (e.g. a dead unit): nothing to measure;
            if the model is on the meta device (no values to run).
        """
        valid.floating_model("model", model)
        valid.integer("trials", trials, low=1)
        valid.seed("seed", seed)
        check_layer(model, layer)
        valid.model("model", model)
        h, w = valid.size("input_size", input_size)
        channels = (
            first_in_channels(model)
            if in_channels is None
            else valid.integer("in_channels", in_channels, low=1)
        )
        if unit is not None:
            unit = valid.position("unit", unit, _map_size(model, layer, (h, w), channels))
        probe = _Probe(model, layer, unit, seed)
        base = probe.images(trials, channels, h, w)
        if not probe.changes(base, slice(None), slice(None)):
            raise ValueError(f"no input pixel changes the unit {unit} of {layer!r}; cannot probe")
        box = probe.gradient_box(base)
        if box is not None and not probe.changes_outside(base, box):
            return box
        return probe.search(base)
