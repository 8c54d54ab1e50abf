"""Private (engine): receptive-field rules for operations that move a map's grid without a
kernel: explicit (possibly asymmetric) padding and nearest-neighbour upsampling.

Both rules are exact: padding shifts the map by its ``before`` amount (a 1-tap window), and
upsampling by an integer factor ``s`` makes output position ``i`` a copy of input position
``i // s``; the rule reads that index map from PyTorch itself and refuses any other.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .field import Call, Field, ReceptiveFieldError
from .rules import trailing

__all__ = ["pad", "upsample"]


def pad(c: Call) -> Field:
    """``F.pad(x, pad, mode="constant")`` and ``nn.ZeroPad2d`` / ``nn.ConstantPad*d``: each
    spatial axis is shifted by its ``before`` amount (negative amounts crop), asymmetric
    amounts included. Amounts computed from the map's size at run time are refused (a crop
    would be padded differently); so are the modes that copy pixels into the border."""
    f = c.only()
    if f.pooled:
        return f
    t = c.inputs[0]
    if isinstance(c.target, nn.Module):
        amounts: Any = c.target.padding
        mode = "constant"
    else:
        amounts, mode = c.arg(1, "pad"), c.arg(2, "mode", "constant")
        if c.extra.get("computed", False):
            raise ReceptiveFieldError(
                f"{c.where}: the padding is computed from the map's size at run time, so a crop "
                "would be padded differently than the whole image; there is no exact crop"
            )
    if mode != "constant":
        raise ReceptiveFieldError(
            f"{c.where}: mode={mode!r} copies pixels from inside the image into the border, so "
            "receptive fields are not uniform there; only 'constant' padding is supported"
        )
    trailing(f, t, c, "padding")
    n = len(f.dims)
    amounts = tuple(int(a) for a in amounts)
    before = []
    for d in range(t.dim() - n, t.dim()):
        k = 2 * (t.dim() - 1 - d)  # F.pad lists the last dimension first
        before.append(amounts[k] if k < len(amounts) else 0)
    out = tuple(int(s) for s in c.output.shape[-n:])
    return f.window((1,) * n, (1,) * n, tuple(before), (1,) * n, out)


def _index_map(c: Call, t: Tensor, axis: int) -> Tensor:
    """Which input position each output position of ``axis`` copies, read by running the
    operation itself on a map holding each position's index (float64: exact integers)."""
    n_in = t.shape[axis]
    shape = [1] * t.dim()
    shape[axis] = n_in
    probe = torch.arange(n_in, dtype=torch.float64, device=t.device).reshape(shape)
    probe = probe.expand(1, *t.shape[1:]).contiguous()
    if isinstance(c.target, nn.Module):
        out: Tensor = c.target(probe)
    else:
        out = c.target(probe, *c.args[1:], **c.kwargs)
    return out.movedim(axis, 0).reshape(out.shape[axis], -1)[:, 0].round().long().cpu()


def upsample(c: Call) -> Field:
    """Nearest-neighbour upsampling by integer factors (``nn.Upsample(scale_factor=2)``,
    ``F.interpolate(x, scale_factor=2, mode="nearest")``, as HRNet's fusion layers): output
    position ``i`` copies input position ``i // s``, so its span is that position's span; the
    stride shrinks by ``s`` and the crop lattice keeps the coarser map's stride; the crop is
    anchored (each of its maps keeps the full map's size modulo its stride, so the branches still
    meet). A fixed output ``size`` (a crop would be resized to it), a factor that does not divide
    the map's stride, and the interpolating modes are refused."""
    f = c.only()
    if f.pooled:
        return f
    t = c.inputs[0]
    m = c.target
    if isinstance(m, nn.Module):
        mode, scale = getattr(m, "mode", "nearest"), getattr(m, "scale_factor", None)
    else:
        mode, scale = c.arg(3, "mode", "nearest"), c.arg(2, "scale_factor")
    if mode not in ("nearest", "nearest-exact"):
        raise ReceptiveFieldError(
            f"{c.where}: {mode!r} upsampling weighs neighbours by their position, so receptive "
            "fields are not uniform; only 'nearest' upsampling by integer factors is supported"
        )
    if scale is None:
        raise ReceptiveFieldError(
            f"{c.where}: upsampling to a fixed size resizes a crop to that size too, so there is "
            "no exact crop; upsample by a scale_factor"
        )
    trailing(f, t, c, "upsampling")
    n = len(f.dims)
    axes = range(t.dim() - n, t.dim())
    factors = [c.output.shape[a] // t.shape[a] for a in axes]
    size, stride, start, lo, hi = [], [], [], [], []
    for i, (a, s) in enumerate(zip(axes, factors, strict=True)):
        source = _index_map(c, t, a)
        if s < 1 or not torch.equal(source, torch.arange(c.output.shape[a]) // s):
            raise ReceptiveFieldError(
                f"{c.where}: upsampling {tuple(t.shape[-n:])} to {tuple(c.output.shape[-n:])} is "
                "not by an integer factor; there is no uniform receptive field"
            )
        if f.stride[i] % s:
            raise ReceptiveFieldError(
                f"{c.where}: upsampling by {s} a map whose positions are {f.stride[i]} pixels "
                "apart puts them at fractional pixels; there is no uniform receptive field"
            )
        step = f.stride[i] // s
        stride.append(step)
        start.append(f.start[i] - (s - 1) * step)  # position i*s+r: a box that holds them all
        size.append(f.size[i] + (s - 1) * step)
        lo.append(f.lo[i][source])
        hi.append(f.hi[i][source])
    return replace(
        f, size=tuple(size), stride=tuple(stride), start=tuple(start), lo=tuple(lo),
        hi=tuple(hi), period=f.lattice, anchored=True,
    )  # fmt: skip
