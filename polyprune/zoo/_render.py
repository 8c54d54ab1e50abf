"""Rendering core of the procedural concept images (private; see :mod:`polyprune.zoo._concepts`).

Every image is a pattern drawn in a ``fg`` colour over a ``bg`` colour inside a soft-edged disc (the
"window"), over a cluttered background, with luminance noise. Per image, the window's position and
radius, the pattern's period, phase, orientation jitter and sharpness, both colours, the clutter and
the noise level are random. The window's centre is within ``0.125 * size`` of the image centre on
each axis and its radius is at least ``0.30 * size``, so it always contains the disc of radius
:data:`COVERED_RADIUS` ``* size`` around the image centre.

Images are generated in blocks of :data:`BLOCK`; block ``b`` depends only on ``(seed, stream, b)``
and the concepts rendered in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

CONCEPTS: tuple[str, ...] = (
    "hstripes",
    "vstripes",
    "dstripes",
    "rings",
    "checker",
    "dots",
    "blobs",
)
"""Names of the procedural concepts, in a fixed order (``concepts=`` defaults to all of them)."""

MIN_SIZE = 16
"""Smallest image side (pixels) accepted."""

BLOCK = 256
"""Images per independently seeded block."""

_CENTRE_JITTER = 0.125  # window centre offset per axis, fraction of size
_MIN_RADIUS, _MAX_RADIUS = 0.30, 0.55
COVERED_RADIUS = _MIN_RADIUS - _CENTRE_JITTER * math.sqrt(2)
"""The window always contains the disc of radius ``COVERED_RADIUS * size`` around the centre."""
_N_BLOBS = 4
_M64 = (1 << 64) - 1


def block_seed(seed: int, stream: int, block: int) -> int:
    """Mix ``(seed, stream, block)`` into one 63-bit generator seed (splitmix64 finaliser)."""
    z = (
        seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + block * 0x94D049BB133111EB
    ) & _M64
    z ^= z >> 31
    z = (z * 0xBF58476D1CE4E5B9) & _M64
    z ^= z >> 29
    return z >> 1


def block_labels(seed: int, n_concepts: int, block: int) -> Tensor:
    """Balanced labels of one block: ``arange(BLOCK) % n_concepts``, shuffled by its own stream."""
    gen = torch.Generator().manual_seed(block_seed(seed, 1, block))
    labels = torch.arange(BLOCK, dtype=torch.int64) % n_concepts
    return labels[torch.randperm(BLOCK, generator=gen)]


class _Params(NamedTuple):
    cx: Tensor  # (n,) window centre, pixels
    cy: Tensor
    radius: Tensor  # (n,) window radius, pixels
    period: Tensor  # (n,) pattern period, pixels
    phase: Tensor
    phase2: Tensor
    jitter: Tensor  # orientation jitter, radians
    diag: Tensor  # +-pi/4, used by dstripes
    sharp: Tensor  # sigmoid gain of the stripe profile
    dot_radius: Tensor  # fraction of the period
    blob_off: Tensor  # (n, K, 2) blob offsets, fraction of the window radius
    blob_sigma: Tensor  # (n, K) pixels
    fg: Tensor  # (n, 3)
    bg: Tensor  # (n, 3)
    clutter: Tensor  # (n, 3, 5, 5) low-frequency background clutter
    clutter_amp: Tensor
    noise: Tensor  # (n, 1, size, size) luminance noise, already scaled


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def draw_params(n: int, size: int, gen: torch.Generator) -> _Params:
    """Draw every random quantity of ``n`` images (same draws whatever the concepts)."""
    s = float(size)
    cx = s / 2 + _uniform(gen, (n,), -_CENTRE_JITTER, _CENTRE_JITTER) * s
    cy = s / 2 + _uniform(gen, (n,), -_CENTRE_JITTER, _CENTRE_JITTER) * s
    radius = _uniform(gen, (n,), _MIN_RADIUS, _MAX_RADIUS) * s
    period = _uniform(gen, (n,), 0.09, 0.20) * s
    phase = _uniform(gen, (n,), 0.0, 2 * math.pi)
    phase2 = _uniform(gen, (n,), 0.0, 2 * math.pi)
    jitter = _uniform(gen, (n,), -math.pi / 18, math.pi / 18)
    diag = torch.where(torch.rand(n, generator=gen) < 0.5, math.pi / 4, -math.pi / 4)
    sharp = _uniform(gen, (n,), 2.0, 6.0)
    dot_radius = _uniform(gen, (n,), 0.18, 0.30)
    blob_off = (torch.rand(n, _N_BLOBS, 2, generator=gen) - 0.5) * 1.2
    blob_sigma = _uniform(gen, (n, _N_BLOBS), 0.06, 0.11) * s
    # per channel, |fg - bg| lies in [0.35, 0.65] (a circular offset of fg)
    fg = torch.rand(n, 3, generator=gen)
    bg = torch.remainder(fg + 0.35 + 0.30 * torch.rand(n, 3, generator=gen), 1.0)
    clutter = torch.rand(n, 3, 5, 5, generator=gen) - 0.5
    clutter_amp = _uniform(gen, (n,), 0.05, 0.25)
    noise_sigma = _uniform(gen, (n, 1, 1, 1), 0.0, 0.06)
    noise = torch.randn(n, 1, size, size, generator=gen) * noise_sigma
    return _Params(
        cx, cy, radius, period, phase, phase2, jitter, diag, sharp, dot_radius,
        blob_off, blob_sigma, fg, bg, clutter, clutter_amp, noise,
    )  # fmt: skip


class _Frame(NamedTuple):
    """Per-image coordinates (pixels) of a subset of images, relative to the window centre."""

    u: Tensor  # (m, 1, size) x - cx
    v: Tensor  # (m, size, 1) y - cy
    ur: Tensor  # (m, size, size) rotated coordinates
    vr: Tensor
    p: _Params  # parameters of the subset, reshaped to broadcast as (m, 1, 1)
    xx: Tensor  # (1, 1, size) pixel centres
    yy: Tensor  # (1, size, 1)


def _col(t: Tensor) -> Tensor:
    return t.view(-1, 1, 1)


def _stripes_v(f: _Frame) -> Tensor:  # pattern varies along vr: horizontal stripes
    return torch.sigmoid(f.p.sharp * torch.sin(2 * math.pi / f.p.period * f.vr + f.p.phase))


def _stripes_u(f: _Frame) -> Tensor:  # pattern varies along ur: vertical (or diagonal) stripes
    return torch.sigmoid(f.p.sharp * torch.sin(2 * math.pi / f.p.period * f.ur + f.p.phase))


def _rings(f: _Frame) -> Tensor:
    r = torch.sqrt(f.u**2 + f.v**2)
    return torch.sigmoid(f.p.sharp * torch.sin(2 * math.pi / f.p.period * r + f.p.phase))


def _checker(f: _Frame) -> Tensor:
    w = 2 * math.pi / f.p.period
    prod = torch.sin(w * f.ur + f.p.phase) * torch.sin(w * f.vr + f.p.phase2)
    return torch.sigmoid(2 * f.p.sharp * prod)


def _dots(f: _Frame) -> Tensor:
    du = torch.remainder(f.ur / f.p.period + f.p.phase / (2 * math.pi), 1.0) - 0.5
    dv = torch.remainder(f.vr / f.p.period + f.p.phase2 / (2 * math.pi), 1.0) - 0.5
    dist = torch.sqrt(du**2 + dv**2)
    return torch.sigmoid((f.p.dot_radius - dist) * f.p.sharp * 6)


def _blobs(f: _Frame) -> Tensor:
    p = f.p
    bx = p.cx.view(-1, 1) + p.blob_off[:, :, 0] * p.radius.view(-1, 1)
    by = p.cy.view(-1, 1) + p.blob_off[:, :, 1] * p.radius.view(-1, 1)
    dx2 = (f.xx.unsqueeze(1) - bx[..., None, None]) ** 2
    dy2 = (f.yy.unsqueeze(1) - by[..., None, None]) ** 2
    sig2 = 2 * p.blob_sigma[..., None, None] ** 2
    return torch.clamp(torch.exp(-(dx2 + dy2) / sig2).sum(dim=1), 0.0, 1.0)


_PATTERNS: dict[str, Callable[[_Frame], Tensor]] = {
    "hstripes": _stripes_v,
    "vstripes": _stripes_u,
    "dstripes": _stripes_u,
    "rings": _rings,
    "checker": _checker,
    "dots": _dots,
    "blobs": _blobs,
}
_ROTATED = {"dstripes"}  # concepts whose frame is turned by +-45 degrees


def _frame(p: _Params, idx: Tensor, name: str, size: int) -> _Frame:
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    xx, yy = grid.view(1, 1, size), grid.view(1, size, 1)
    sub = _Params(*(t[idx] for t in p))
    angle = sub.jitter + (sub.diag if name in _ROTATED else 0.0)
    cos, sin = _col(torch.cos(angle)), _col(torch.sin(angle))
    u, v = xx - _col(sub.cx), yy - _col(sub.cy)
    shaped = sub._replace(
        period=_col(sub.period), phase=_col(sub.phase), phase2=_col(sub.phase2),
        sharp=_col(sub.sharp), dot_radius=_col(sub.dot_radius),
    )  # fmt: skip
    return _Frame(u, v, u * cos + v * sin, v * cos - u * sin, shaped, xx, yy)


def _upsample(grid: Tensor, size: int) -> Tensor:
    """Bilinear upsampling of ``(n, c, k, k)`` to ``(n, c, size, size)`` as two small matmuls."""
    eye = torch.eye(grid.shape[-1]).unsqueeze(1)
    interp = F.interpolate(eye, size=size, mode="linear", align_corners=False).squeeze(1)
    return interp.T @ grid @ interp


def render(
    names: tuple[str, ...],
    labels: Tensor,
    size: int,
    gen: torch.Generator,
    out: Tensor | None = None,
    count: int | None = None,
) -> Tensor:
    """Render image ``i`` as concept ``names[labels[i]]``; float32 ``(n, 3, size, size)`` in [0, 1].

    Writes into ``out`` when given. The random draws do not depend on the labels. With ``count``,
    the draws are made for all ``len(labels)`` images but only the first ``count`` are rendered
    (the same images as rendering all and slicing).
    """
    p = draw_params(labels.numel(), size, gen)
    if count is not None:
        p = _Params(*(t[:count] for t in p))
        labels = labels[:count]
    n = labels.numel()
    pattern = torch.zeros(n, size, size)
    for k, name in enumerate(names):
        idx = (labels == k).nonzero().flatten()
        if idx.numel():
            pattern[idx] = _PATTERNS[name](_frame(p, idx, name, size))
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dist = torch.sqrt(
        (grid.view(1, 1, size) - _col(p.cx)) ** 2 + (grid.view(1, size, 1) - _col(p.cy)) ** 2
    )
    window = torch.sigmoid((_col(p.radius) - dist) / 1.5).unsqueeze(1)
    clutter = _upsample(p.clutter, size) * p.clutter_amp.view(-1, 1, 1, 1)
    if out is None:
        out = torch.empty(n, 3, size, size)
    # inside the window: bg + (fg - bg) * pattern; outside: bg + clutter; everywhere: noise
    torch.mul((p.fg - p.bg)[..., None, None], window * pattern.unsqueeze(1), out=out)
    out.add_(p.bg[..., None, None]).addcmul_(1 - window, clutter).add_(p.noise)
    return out.clamp_(0.0, 1.0)


def render_block(
    seed: int,
    stream: int,
    block: int,
    names: tuple[str, ...],
    labels: Tensor,
    size: int,
    out: Tensor | None = None,
    count: int | None = None,
) -> Tensor:
    """Render (the first ``count`` images of) one block from its own seeded stream.

    ``labels`` has :data:`BLOCK` entries.
    """
    gen = torch.Generator().manual_seed(block_seed(seed, stream, block))
    return render(names, labels, size, gen, out, count)
