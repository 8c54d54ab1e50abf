"""Private (engine): measure a unit's receptive field empirically (see ``ReceptiveField.probe``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._model import eval_mode, model_dtype_device
from .run import center, forward_until, layer_output_shape, read_unit

__all__ = ["Probe", "measure"]


def _float64_state(model: nn.Module, layer: str, x: Tensor) -> dict[str, Tensor]:
    """float64 copies of the parameters and buffers of the modules that run up to ``layer``."""
    ran: set[str] = set()
    handles = [
        m.register_forward_pre_hook(lambda mod, args, name=name: ran.add(name))
        for name, m in model.named_modules()
    ]
    try:
        with torch.no_grad():
            forward_until(model, x, [layer])
    finally:
        for handle in handles:
            handle.remove()
    state: dict[str, Tensor] = {}
    for name in ran:
        module = model.get_submodule(name) if name else model
        prefix = f"{name}." if name else ""
        for key, t in [
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        ]:
            if t.is_floating_point():
                state[prefix + key] = t.detach().double()
    return state


class Probe:
    """The measurements behind :meth:`ReceptiveField.probe` (see there)."""

    def __init__(self, model: nn.Module, layer: str, unit: tuple[int, int] | None, seed: int):
        self.model, self.layer, self.unit = model, layer, unit
        self.gen = torch.Generator().manual_seed(seed)
        self.reference: Tensor | None = None
        self.state: dict[str, Tensor] | None = None

    def images(self, n: int, c: int, h: int, w: int) -> Tensor:
        base = torch.rand(n, c, h, w, generator=self.gen, dtype=torch.float64)
        # large values, positive in half of the images (they win max pools behind positive
        # weights) and of random sign in the other half (behind negative weights)
        noise = 100.0 * torch.randn(base.shape, generator=self.gen, dtype=torch.float64)
        noise[: n // 2] = noise[: n // 2].abs()
        self.noise = noise
        self.reference = self.value(base).detach()
        return base

    def value(self, x: Tensor) -> Tensor:
        with eval_mode(self.model):
            if self.state is None:
                self.state = _float64_state(self.model, self.layer, x[:1].float())
            state = self.state
            call: Callable[[Any], Any] = lambda inputs: functional_call(  # noqa: E731
                self.model, state, (inputs,), strict=False
            )
            act = forward_until(self.model, x, [self.layer], call=call)[self.layer]
        return read_unit(act, None, self.unit if self.unit is not None else center(act.shape[2:]))

    def changes(self, base: Tensor, rows: slice, cols: slice, outside: bool = False) -> bool:
        x = base.clone()
        region = torch.zeros(base.shape[2:], dtype=torch.bool)
        region[rows, cols] = True
        if outside:
            region = ~region
        x[..., region] = self.noise[..., region]
        assert self.reference is not None
        with torch.no_grad():
            delta = (self.value(x) - self.reference).abs()
        return bool((delta > 1e-9 * (1.0 + self.reference.abs())).any())

    def changes_outside(self, base: Tensor, box: tuple[int, int, int, int]) -> bool:
        top, left, bottom, right = box
        return self.changes(base, slice(top, bottom), slice(left, right), outside=True)

    def gradient_box(self, base: Tensor) -> tuple[int, int, int, int] | None:
        x = base.clone().requires_grad_(True)
        value = self.value(x)
        weights = torch.randn(value.shape, generator=self.gen, dtype=value.dtype)
        (grad,) = torch.autograd.grad((value * weights).sum(), x)
        seen = grad.abs().sum(dim=(0, 1)) > 0
        rows, cols = seen.any(dim=1).nonzero(), seen.any(dim=0).nonzero()
        if rows.numel() == 0:
            return None
        return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1

    def search(self, base: Tensor) -> tuple[int, int, int, int]:
        h, w = base.shape[2:]
        every = slice(None)

        def first(n: int, changed: Any) -> int:  # smallest r in [1, n] with changed(r) true
            lo, hi = 1, n
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if changed(mid) else (mid + 1, hi)
            return lo

        top = first(h, lambda r: self.changes(base, slice(0, r), every)) - 1
        left = first(w, lambda c: self.changes(base, every, slice(0, c))) - 1
        bottom = h - first(h, lambda r: self.changes(base, slice(h - r, h), every)) + 1
        right = w - first(w, lambda c: self.changes(base, every, slice(w - c, w))) + 1
        return top, left, bottom, right


def map_size(model: nn.Module, layer: str, size: tuple[int, int], channels: int) -> tuple[int, int]:
    """``(H, W)`` of ``layer``'s map for images of ``size`` (one zero image runs); a
    ``ValueError`` for a layer without a 2-D map."""
    dtype, device = model_dtype_device(model)
    x = torch.zeros(1, channels, *size, dtype=dtype, device=device)
    shape = layer_output_shape(model, layer, x)
    if len(shape) != 4:
        raise ValueError(f"layer {layer!r} does not produce a 2-D map (N, C, H, W): {tuple(shape)}")
    return int(shape[2]), int(shape[3])


def measure(
    model: nn.Module, layer: str, size: tuple[int, int], channels: int, trials: int, seed: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(size, stride, start, output_size)`` of a layer's field, from probed boxes.

    Probes the box of the map's center unit and of a diagonal neighbour: their distance is the
    stride, the center's box the size. Both boxes must lie inside the image (else the measured
    field would be clamped, not uniform): a ``ValueError`` says so.
    """
    out = map_size(model, layer, size, channels)
    if out[0] < 2 or out[1] < 2:
        raise ValueError(
            f"the map of {layer!r} is {out[0]}×{out[1]}: too small to measure a stride"
        )
    ci, cj = center(out)
    ni, nj = (ci + 1 if ci + 1 < out[0] else ci - 1), (cj + 1 if cj + 1 < out[1] else cj - 1)
    boxes = []
    for unit in ((ci, cj), (ni, nj)):
        probe = Probe(model, layer, unit, seed)
        base = probe.images(trials, channels, *size)
        if not probe.changes(base, slice(None), slice(None)):
            raise ValueError(f"no input pixel changes the unit {unit} of {layer!r}; cannot measure")
        box = probe.gradient_box(base)
        if box is None or probe.changes_outside(base, box):
            box = probe.search(base)
        boxes.append(box)
    (t0, l0, b0, r0), (t1, l1, _, _) = boxes
    if min(t0, l0) <= 0 or b0 >= size[0] or r0 >= size[1]:
        raise ValueError(
            f"the field of the center unit of {layer!r} reaches the border of a "
            f"{size[0]}×{size[1]} image, so its size cannot be measured there; measure at a "
            "larger input size"
        )
    stride = (abs(t1 - t0) // abs(ni - ci), abs(l1 - l0) // abs(nj - cj))
    if min(stride) < 1:
        raise ValueError(f"neighbouring units of {layer!r} see the same pixels: no stride")
    return (b0 - t0, r0 - l0), stride, (t0 - ci * stride[0], l0 - cj * stride[1]), out
