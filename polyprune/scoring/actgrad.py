"""ActGrad (paper 3.2.1): activation × gradient, averaged over the map."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _masking as mk
from .. import _validate as valid
from ._base import BaseScorer, ScoringJob
from ._tools import mask_gradients

__all__ = ["ActGrad"]

# (module, its input, ∂f/∂output, output rows to score, chunk size in elements) -> (out, in)
KernelRule = Callable[[nn.Module, Tensor, Tensor, Tensor, int], Tensor]
_CONV: dict[int, Callable[..., Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _conv_channels(t: Tensor) -> Tensor:
    """(N, C, *spatial) -> (N, C, L)."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def _linear_channels(t: Tensor) -> Tensor:
    """(N, *, C) -> (N, C, L)."""
    return t.movedim(-1, 1).reshape(t.shape[0], t.shape[-1], -1)


def _linear_kernel(module: nn.Module, x: Tensor, g: Tensor, rows: Tensor, chunk: int) -> Tensor:
    # |W_oi · x_i · g_o| = |W_oi| · |x_i| · |g_o|: the sum over images and positions is a matmul
    xs, gs = _linear_channels(x).abs(), _linear_channels(g).abs()
    per_image = torch.einsum("nol,nil->oi", gs, xs) / xs.shape[2]
    assert isinstance(module, nn.Linear)
    return module.weight.detach().abs() * per_image


def _box(g: Tensor) -> list[slice] | None:
    """Per spatial dimension, the smallest slice holding every non-zero of ``g`` (N, C, *map)."""
    nonzero = (g != 0).flatten(0, 1).any(0)
    if not bool(nonzero.any()):
        return None
    box = []
    for dim in range(nonzero.dim()):
        others = tuple(d for d in range(nonzero.dim()) if d != dim)
        hits = (nonzero.any(others) if others else nonzero).nonzero().squeeze(1)
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return box


def _conv_kernel(module: nn.Module, x: Tensor, g: Tensor, rows: Tensor, chunk: int) -> Tensor:
    """Σ_images mean_map |(W_oi ∗ x_i) · g_o|, for the output channels ``rows``.

    The per-input-channel maps ``W_oi ∗ x_i`` come from one grouped convolution (``groups`` =
    input channels, so no sum over inputs), a chunk of output channels at a time so that the
    ``(N, in, chunk, *map)`` intermediate stays under ``chunk`` elements. Only the part of the
    map where the gradient is non-zero is computed (for a unit's single position, its
    receptive field in this layer); the mean is still over the whole map.
    """
    assert isinstance(module, nn.modules.conv._ConvNd)
    weight = module.weight.detach()
    out_ch, in_per_group = weight.shape[:2]
    scores = torch.zeros(out_ch, in_per_group, dtype=weight.dtype, device=weight.device)
    box = _box(g[:, rows])
    if box is None:
        return scores
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
    spans = [
        slice(b.start * s, (b.stop - 1) * s + d * (k - 1) + 1)
        for b, s, d, k in zip(box, module.stride, module.dilation, module.kernel_size, strict=True)
    ]
    x_index: tuple[Any, ...] = (..., *spans)
    g_index: tuple[Any, ...] = (..., *box)
    x, full = x[x_index], g[0, 0].numel()
    g = g[g_index]
    conv = _CONV[len(module.kernel_size)]
    per_group = out_ch // module.groups
    n, length = g.shape[0], g[0, 0].numel()
    step = max(1, chunk // max(1, n * in_per_group * length))
    for group in range(module.groups):
        inside = rows[(rows >= group * per_group) & (rows < (group + 1) * per_group)]
        xg = x[:, group * in_per_group : (group + 1) * in_per_group]
        for start in range(0, inside.numel(), step):
            idx = inside[start : start + step]
            c = idx.numel()
            w = weight[idx].transpose(0, 1).reshape(in_per_group * c, 1, *weight.shape[2:])
            z = conv(xg, w, None, module.stride, 0, module.dilation, in_per_group)
            z = z.reshape(n, in_per_group, c, -1).mul_(g[:, idx].reshape(n, 1, c, -1))
            scores[idx] = z.abs_().sum(3).sum(0).T / full
    return scores


_KERNEL_RULES: dict[type[nn.Module], KernelRule] = {
    nn.Linear: _linear_kernel,
    nn.modules.conv._ConvNd: _conv_kernel,
}
_CHANNELS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.Linear: _linear_channels,
    nn.modules.conv._ConvNd: _conv_channels,
}


def _lookup(table: Mapping[type[nn.Module], Any], module: nn.Module) -> Any:
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    raise TypeError(f"ActGrad has no rule for {type(module).__name__}")


def _rows(region: Tensor) -> Tensor:
    """Indices of the output channels with at least one element in the region."""
    return region.reshape(region.shape[0], -1).any(1).nonzero().squeeze(1)


Record = list[tuple[str, Tensor, int, Tensor]]  # (weight name, input, input version, output)


@contextlib.contextmanager
def _recording(modules: Mapping[str, nn.Module]) -> Iterator[Record]:
    """Forward hooks keeping each module's input and output; the output passed on is a clone,
    so an in-place op after the layer (``ReLU(inplace=True)``) cannot rewrite the kept one."""
    records: Record = []

    def hook(name: str) -> Callable[[nn.Module, Any, Any], Tensor]:
        def fn(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            records.append((name, args[0], args[0]._version, output))
            return output.clone()

        return fn

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook(name)))
        yield records
    finally:
        for handle in handles:
            handle.remove()


class ActGrad(BaseScorer, name="actgrad"):
    """Activation × gradient: how much of the objective flows through each filter or kernel.

    - ``"filter"``: ``S = Σ_images 1/(H W) Σ_map |a · ∂f/∂a|``, with ``a`` the layer's output
      channel (before any activation function; after ``ReLU`` the product is the same).
    - ``"kernel"``: each input channel's own share of the output map,
      ``S_oi = Σ_images mean_map |(W_oi ∗ x_i) · ∂f/∂y_o|``, computed with a grouped
      convolution in chunks of output channels (at most ``chunk_bytes`` per intermediate,
      or one output channel's worth when that is larger), only over the part of the map
      where the gradient is non-zero.
    - ``"weight"``: ``|w · ∂f/∂w|`` (as SNIP; a single weight has no map of its own).

    Per-image absolute values are summed over all images.

    Parameters
    ----------
    chunk_bytes : int
        Memory bound of the kernel-level intermediate ``(N, in, chunk, *map)`` (64 MiB).
    **options
        ``keep``, ``scope``, ``normalize``, ``progress``: see :class:`BaseScorer`.

    Examples
    --------
    >>> import torch
    >>> from polyprune import Unit
    >>> from polyprune.scoring import ActGrad
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                             torch.nn.Conv2d(4, 2, 3))
    >>> x = torch.rand(8, 3, 9, 9)
    >>> kernels = ActGrad().score(model, x, Unit("2", 1), granularity="kernel")
    >>> tuple(kernels["0.weight"].shape), tuple(kernels["2.weight"].shape)
    ((4, 3), (2, 4))
    """

    def __init__(self, *, chunk_bytes: int = 64 * 2**20, **options: Any) -> None:
        super().__init__(**options)
        valid.integer("chunk_bytes", chunk_bytes, low=1)
        self.chunk_bytes = chunk_bytes

    def compute(self, job: ScoringJob) -> Mapping[str, Tensor]:
        if job.granularity == "weight":
            ones = {name: torch.ones(shape) for name, shape in job.shapes.items()}
            return {n: g.abs() for n, g in mask_gradients(job, ones, desc="ActGrad").items()}
        modules = {name: mk.owner(job.model, name)[0] for name in job.shapes}
        rows = {name: _rows(job.regions[name]) for name in job.shapes}
        scores = {
            name: torch.zeros(mk.mask_shape(job.shapes[name], job.granularity),
                              dtype=job.weight(name).dtype, device=job.weight(name).device)
            for name in job.shapes
        }  # fmt: skip
        with _recording(modules) as records:
            for x in job.each_batch("ActGrad"):
                records.clear()
                f = job.forward(x.detach().requires_grad_())
                outputs = [out for _, _, _, out in records]
                grads = torch.autograd.grad(f, outputs, allow_unused=True)
                with torch.no_grad():
                    for (name, inp, version, out), g in zip(records, grads, strict=True):
                        if g is None:
                            continue
                        if inp._version != version:
                            raise RuntimeError(
                                f"the input of {name!r} was modified in place after the layer "
                                "ran; ActGrad needs it unchanged"
                            )
                        scores[name] += self._layer(job, modules[name], inp, out, g, rows[name])
                records.clear()
        return scores

    def _layer(
        self, job: ScoringJob, module: nn.Module, inp: Tensor, out: Tensor, g: Tensor, rows: Tensor
    ) -> Tensor:
        if job.granularity == "filter":
            channels: Callable[[Tensor], Tensor] = _lookup(_CHANNELS, module)
            product: Tensor = (channels(out) * channels(g)).abs()
            return product.mean(2).sum(0)
        rule: KernelRule = _lookup(_KERNEL_RULES, module)
        chunk = max(1, self.chunk_bytes // g.element_size())
        scores: Tensor = rule(module, inp.detach(), g, rows.to(g.device), chunk)
        return scores

    def __repr__(self) -> str:
        return f"ActGrad(chunk_bytes={self.chunk_bytes}, keep={self.keep}, scope={self.scope!r})"
