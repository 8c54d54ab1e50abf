"""Private (engine): the receptive-field rules the op table (:mod:`.ops`) points to.

Each rule maps one :class:`~.field.Call` (an operation with its inputs' fields) to the field of
its output. Rules never guess: an argument they cannot follow raises
:class:`~.field.ReceptiveFieldError` naming the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from .field import Call, Field, ReceptiveFieldError

__all__ = [
    "adaptive_pool",
    "cat",
    "conv",
    "conv_same",
    "functional_pool",
    "getitem",
    "global_norm",
    "layer_norm",
    "linear",
    "module_pool",
    "module_pool_same",
    "permute",
    "pointwise",
    "reshape",
    "same_padding",
    "softmax",
    "split",
    "squeeze",
    "stack",
    "trailing",
    "transpose",
    "unsqueeze",
]


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    out = tuple(int(v) for v in value)
    if len(out) == 1 and n > 1:
        return out * n
    if len(out) != n:
        raise ReceptiveFieldError(f"expected {n} values, got {value!r}")
    return out


def trailing(f: Field, t: Tensor, c: Call, what: str) -> None:
    """A window operation works on the last dims of its input: they must be the spatial ones."""
    n = len(f.dims)
    if f.dims != tuple(range(t.dim() - n, t.dim())):
        raise ReceptiveFieldError(
            f"{c.where}: {what} slides over the last {n} dimensions of a tensor whose spatial "
            f"axes are at {f.dims}; polyprune cannot follow the field there"
        )


def _window(c: Call, kernel: Any, stride: Any, padding: Any, dilation: Any) -> Field:
    f = c.only()
    t = c.inputs[0]
    if f.pooled:  # a window over a map with no spatial axes left (a gate's 1×1 map)
        return f
    trailing(f, t, c, "this window")
    n = len(f.dims)
    kernel = _tuple(kernel, n)
    stride = _tuple(stride if stride not in (None, ()) else kernel, n)
    return f.window(kernel, stride, _tuple(padding, n), _tuple(dilation, n), c.output.shape[-n:])


def _static_padding(m: nn.Module, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> Any:
    if isinstance(m.padding, str):  # "valid" or "same" (stride 1): PyTorch pads total//2 first
        return tuple(
            0 if m.padding == "valid" else (d * (k - 1)) // 2
            for k, d in zip(kernel, dilation, strict=True)
        )
    return m.padding


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of a map of ``size``, computed at run time (timm's
    ``pad_same``): ``(before, after)``, ``before = total // 2``. The total is
    ``max(dilation * (kernel - 1) + 1 - stride + (-size mod stride), 0)``: it depends on the
    size only modulo the stride, so a crop whose maps keep the full maps' sizes modulo their
    strides (an *anchored* field's crop) is padded exactly as the whole image."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _same_window(c: Call, kernel: Any, stride: Any, dilation: Any, static: Any = 0) -> Field:
    """A window with "SAME" padding computed at run time (plus ``static`` padding): the field
    of the whole image's padding, anchored when a stride makes the padding depend on the size."""
    f = c.only()
    sizes = f.spatial_shape(c.inputs[0])
    n = len(sizes)
    k, s, d, p = _tuple(kernel, n), _tuple(stride, n), _tuple(dilation, n), _tuple(static, n)
    before = tuple(same_padding(*args)[0] + pi for *args, pi in zip(sizes, k, s, d, p, strict=True))
    out = _window(c, k, s, before, d)
    return replace(out, anchored=True) if any(si > 1 for si in s) and not f.pooled else out


def _conv(c: Call, same: bool) -> Field:
    m = c.target
    assert isinstance(m, nn.modules.conv._ConvNd)
    if m.padding_mode != "zeros":
        raise ReceptiveFieldError(
            f"{c.where}: padding_mode={m.padding_mode!r} copies pixels from inside the image into "
            "the border, so receptive fields are not uniform there; only 'zeros' is supported"
        )
    n = len(m.kernel_size)
    kernel, dilation = _tuple(m.kernel_size, n), _tuple(m.dilation, n)
    padding = _tuple(_static_padding(m, kernel, dilation), n)
    if same:  # the static padding is 0 then
        return _same_window(c, kernel, m.stride, dilation, padding)
    return _window(c, kernel, m.stride, padding, dilation)


def conv(c: Call) -> Field:
    return _conv(c, same=False)


def conv_same(c: Call) -> Field:
    """timm's convolutions with dynamic "SAME" padding (``Conv2dSame``, ``StdConv2dSame`` when
    its ``same_pad`` is set); also its weight-standardized ones, whose weights are normalized
    inside their forward (a per-output-channel rescaling: the same field)."""
    return _conv(
        c, same=bool(getattr(c.target, "same_pad", type(c.target).__name__ == "Conv2dSame"))
    )


def module_pool(c: Call) -> Field:
    m = c.target
    return _window(c, m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1))


def module_pool_same(c: Call) -> Field:
    """timm's ``MaxPool2dSame`` / ``AvgPool2dSame``: "SAME" padding computed at run time."""
    m = c.target
    return _same_window(c, m.kernel_size, m.stride, getattr(m, "dilation", 1))


def functional_pool(c: Call) -> Field:
    """``F.max_pool2d(x, kernel_size, stride, padding, dilation, ...)`` and
    ``F.avg_pool2d(x, kernel_size, stride, padding, ...)``: as the modules."""
    dilation = c.arg(4, "dilation", 1) if "max" in getattr(c.target, "__name__", "") else 1
    return _window(c, c.arg(1, "kernel_size"), c.arg(2, "stride"), c.arg(3, "padding", 0), dilation)


def adaptive_pool(c: Call) -> Field:
    f = c.only()
    t = c.inputs[0]
    if f.pooled:
        return f
    trailing(f, t, c, "adaptive pooling")
    n = len(f.dims)
    in_size, out_size = t.shape[-n:], c.output.shape[-n:]
    if any(i % o for i, o in zip(in_size, out_size, strict=True)):
        raise ReceptiveFieldError(
            f"{c.where}: adaptive pooling from {tuple(in_size)} to {tuple(out_size)} uses windows "
            "of unequal size, so the receptive field is not uniform; choose an input size at "
            "which the map divides evenly"
        )
    kernel = tuple(i // o for i, o in zip(in_size, out_size, strict=True))
    return f.window(kernel, kernel, (0,) * n, (1,) * n, out_size)


def pointwise(c: Call) -> Field:
    """Element-wise operations (activations, arithmetic); several inputs: union of their fields.
    A pooled input (a gate with no spatial axes left) is broadcast over the maps."""
    maps = [(f, t) for f, t in zip(c.fields, c.inputs, strict=True) if not f.pooled]
    first = maps[0][0]
    if any(f.dims != first.dims for f, _ in maps[1:]):
        raise ReceptiveFieldError(f"{c.where}: combines maps whose axes are in different orders")
    if not isinstance(c.output, Tensor) or c.output.dim() <= max(first.dims):
        raise ReceptiveFieldError(f"{c.where}: the output has no spatial axes at {first.dims}")
    sizes = first.spatial_shape(c.output)
    for f, t in maps:
        shape = f.spatial_shape(t)
        if any(s not in (1, o) for s, o in zip(shape, sizes, strict=True)):
            raise ReceptiveFieldError(f"{c.where}: combines maps of sizes {shape} and {sizes}")
    if len(c.fields) == 1 and first.spatial_shape(c.inputs[0]) == sizes:
        return first
    return first.union([f for f in c.fields if f is not first], sizes, c.where)


def linear(c: Call) -> Field:
    """A Linear layer mixes the last dimension: fine for channels-last maps, not for (N,C,H,W)."""
    f = c.only()
    if c.inputs[0].dim() - 1 in f.dims:
        raise ReceptiveFieldError(
            f"{c.where}: a Linear layer on a map mixes its last dimension, which is a spatial "
            "one here; there is no uniform receptive field to follow"
        )
    return f


def layer_norm(c: Call) -> Field:
    """Normalization over the last dims: channels only (pointwise in space) or also the map."""
    f = c.only()
    shape: Any = (
        c.target.normalized_shape
        if isinstance(c.target, nn.Module)
        else c.arg(1, "normalized_shape")
    )
    n = 1 if isinstance(shape, int) else len(shape)
    rank = c.inputs[0].dim()
    if any(d >= rank - n for d in f.dims):
        return f.global_()
    return f


def global_norm(c: Call) -> Field:
    """GroupNorm / InstanceNorm: statistics over the whole map make every unit see all of it."""
    return c.only().global_()


def softmax(c: Call) -> Field:
    f = c.only()
    dim: Any = c.target.dim if isinstance(c.target, nn.Module) else c.arg(1, "dim")
    if not isinstance(dim, int):
        raise ReceptiveFieldError(f"{c.where}: softmax without an integer dim")
    return f.global_() if dim % c.inputs[0].dim() in f.dims else f


def cat(c: Call) -> Field:
    dim = int(c.arg(1, "dim", 0)) % c.output.dim()
    first = c.fields[0]
    if dim in first.dims:
        raise ReceptiveFieldError(f"{c.where}: concatenation along a spatial dimension")
    return pointwise(c)  # constants concatenated with maps contribute no pixels


def stack(c: Call) -> Field:
    """``torch.stack`` along a new axis (timm's selective-kernel paths): the axes after it
    move up by one; the inputs' fields meet as in an element-wise operation."""
    d = int(c.arg(1, "dim", 0)) % c.output.dim()
    fields = [f.moved(tuple(x + 1 if x >= d else x for x in f.dims)) for f in c.fields]
    return pointwise(replace(c, fields=fields, inputs=[t.unsqueeze(d) for t in c.inputs]))


def permute(c: Call) -> Field:
    f = c.only()
    order = c.args[1:] if c.kwargs.get("dims") is None else c.kwargs["dims"]
    if len(order) == 1 and isinstance(order[0], Sequence):
        order = tuple(order[0])
    rank = c.inputs[0].dim()
    order = tuple(int(d) % rank for d in order)
    return f.moved(tuple(order.index(d) for d in f.dims))


def transpose(c: Call) -> Field:
    f = c.only()
    rank = c.inputs[0].dim()
    a, b = (int(c.arg(1, "dim0")) % rank, int(c.arg(2, "dim1")) % rank)
    swap = {a: b, b: a}
    return f.moved(tuple(swap.get(d, d) for d in f.dims))


def unsqueeze(c: Call) -> Field:
    f = c.only()
    d = int(c.arg(1, "dim")) % c.output.dim()
    return f.moved(tuple(x + 1 if x >= d else x for x in f.dims))


def _without(f: Field, removed: Iterable[int]) -> Field:
    """``f`` after the non-spatial axes ``removed`` are dropped: later axes move down."""
    gone = tuple(removed)
    return f.moved(tuple(d - sum(r < d for r in gone) for d in f.dims))


def squeeze(c: Call) -> Field:
    f = c.only()
    t = c.inputs[0]
    dim = c.arg(1, "dim")
    if dim is None:
        removed = [d for d in range(t.dim()) if t.shape[d] == 1]
    else:
        dims = dim if isinstance(dim, Sequence) else (dim,)
        removed = [int(d) % t.dim() for d in dims if t.shape[int(d) % t.dim()] == 1]
    if f.dims and set(f.dims) <= set(removed):  # a 1×1 map (a gate) loses its spatial axes
        return f.pool()
    if any(d in f.dims for d in removed):
        raise ReceptiveFieldError(f"{c.where}: squeezes away a spatial axis")
    return _without(f, removed)


def reshape(c: Call) -> Field:
    """view / reshape / flatten / unflatten: fine when the spatial axes stay, unchanged, as the
    trailing block (channel shuffles) or right after the batch (channels-last)."""
    f = c.only()
    t, out = c.inputs[0], c.output
    if f.pooled:
        return f
    n = len(f.dims)
    sizes = f.spatial_shape(t)
    if all(s == 1 for s in sizes):  # a 1×1 map (a gate, as ResNeSt's radix softmax) reshaped
        return f.pool()
    at_end = f.dims == tuple(range(t.dim() - n, t.dim()))
    if at_end and tuple(out.shape[-n:]) == sizes and out.dim() > n + 1:
        return f.moved(tuple(range(out.dim() - n, out.dim())))
    leading = f.dims == tuple(range(1, 1 + n))
    if leading and tuple(out.shape[1 : 1 + n]) == sizes and out.shape[0] == t.shape[0]:
        return f
    if f.whole:  # every position sees the whole image: so does every element, however arranged
        return f.pool()
    raise ReceptiveFieldError(
        f"{c.where}: reshapes the spatial axes {f.dims} of a {tuple(t.shape)} tensor into "
        f"{tuple(out.shape)}; after a flatten every unit sees the whole input: choose an "
        "earlier layer"
    )


def getitem(c: Call) -> Field:
    """Indexing that selects channels (or batch items) and keeps every position of the map."""
    f = c.only()
    t, index = c.inputs[0], c.args[1]
    items = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in items):
        at = items.index(Ellipsis)
        fill = t.dim() - (len(items) - 1 - sum(i is None for i in items))
        items = items[:at] + (slice(None),) * fill + items[at + 1 :]
    dims, src, dst = [], 0, 0
    for item in items:
        if item is None:
            dst += 1
            continue
        if src in f.dims:
            if not (isinstance(item, slice) and item == slice(None)):
                raise ReceptiveFieldError(f"{c.where}: indexes into a spatial axis")
            dims.append(dst)
        if not isinstance(item, int | slice):
            raise ReceptiveFieldError(f"{c.where}: advanced indexing ({type(item).__name__})")
        dst += 0 if isinstance(item, int) else 1
        src += 1
    dims += [dst + (d - src) for d in f.dims if d >= src]
    return f.moved(dims)


def split(c: Call) -> Field:
    """chunk / split / unbind along a non-spatial axis: every piece keeps the field."""
    f = c.only()
    rank = c.inputs[0].dim()
    name = getattr(c.target, "__name__", str(c.target))
    dim = int(c.arg(2, "dim", 0) if name != "unbind" else c.arg(1, "dim", 0)) % rank
    if dim in f.dims:
        raise ReceptiveFieldError(f"{c.where}: splits a spatial axis")
    if name == "unbind":
        return _without(f, (dim,))
    return f


def reduce(c: Call) -> Field:
    """mean / sum / amax / amin over some axes: channels only keeps the map; all of the map with
    ``keepdim=True`` is a global pool to 1×1 (a squeeze-excitation gate: broadcast back, every
    unit sees the whole input); the map without ``keepdim`` leaves no spatial axis."""
    f = c.only()
    rank = c.inputs[0].dim()
    dim = c.arg(1, "dim")
    if dim is None:
        raise ReceptiveFieldError(f"{c.where}: reduces the whole tensor")
    dims = {int(d) % rank for d in (dim if isinstance(dim, Sequence) else (dim,))}
    keepdim = bool(c.arg(2, "keepdim", False))
    if f.dims and dims >= set(f.dims):  # x.mean((2, 3), keepdim=True): a pooled gate (timm's SE)
        t = c.inputs[0]
        kernel = f.spatial_shape(t)
        n = len(kernel)
        pooled = f.window(kernel, kernel, (0,) * n, (1,) * n, (1,) * n)
        return pooled if keepdim and dims == set(f.dims) else pooled.pool()
    if dims & set(f.dims):
        raise ReceptiveFieldError(
            f"{c.where}: reduces the spatial axes: every unit after it sees the whole input; "
            "choose an earlier layer"
        )
    return f if keepdim else _without(f, dims)
