"""Private (engine): which kernels lie on a path from the input to a unit, over the traced graph.

Hamblin et al.'s *effective* mask drops every kept kernel that has no path from the input to
the target through kept kernels. Paths are followed per channel: a channel is *live* when some
kept kernel connects it to a live channel of the layer before (the input's channels are live),
and *useful* when some kept kernel connects it to a useful channel of the layer after (the
unit's channel is useful). A kept kernel ``(o, i)`` is effective when its input channel is
live and its output channel useful. Biases are constants, not paths from the input.

Operations are classified by the channel behaviour of their entry in the op table (:mod:`.ops`):
Conv/Linear (``"mask"``) mix channels through their kernel mask; ``"keep"`` operations
(activations, normalization, dropout, pooling) keep them; ``"merge"`` (``+``, ``*``, ...) takes the
union; ``"cat"`` along channels stacks; ``"mix"`` connects every channel to every channel.
Anything else raises :class:`~polyprune._graph.trace.GraphError` naming the operation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
import torch.fx as fx
from torch import Tensor, nn

from .._masking import is_maskable
from .ops import describe, lookup
from .trace import GraphError, trace_to, upstream

__all__ = ["KernelPaths", "effective_kernels", "from_kernels", "kernel_view"]

#: A per-channel boolean vector, or True / False for "every / no channel" of unknown width.
Channels = Tensor | bool

_CAT = frozenset((torch.cat, torch.concat))


def kernel_view(mask: Tensor, granularity: str, weight_shape: tuple[int, ...]) -> Tensor:
    """A mask as ``(out, in/groups)`` kernel connectivity (a kernel is on if any weight is)."""
    out, fan_in = weight_shape[:2]
    if granularity == "filter":
        return mask[:, None].expand(out, fan_in)
    if granularity == "kernel":
        return mask
    return mask.reshape(out, fan_in, -1).any(2)


def _kind(node: fx.Node, model: nn.Module) -> str:
    if node.op in ("placeholder", "get_attr"):
        return node.op
    op = lookup(node, model)
    if op is not None:
        if op.channels == "mask":
            if is_maskable(model.get_submodule(str(node.target))):
                return "maskable"
        elif op.channels != "cat" or _cat_dim(node) == 1:
            return op.channels
    raise GraphError(
        f"effective masks cannot follow channels through {describe(node, model)}; supported: "
        "the operations of polyprune's op table (Conv/Linear, channel-wise activations, "
        "normalization, dropout and pooling, element-wise arithmetic, concatenation along "
        "channels)"
    )


def from_kernels(mask: Tensor, kernels: Tensor | None, granularity: str) -> Tensor:
    """``mask`` restricted to the kernels ``(out, in/groups)`` (None: nothing is kept)."""
    if kernels is None:
        return torch.zeros_like(mask)
    if granularity == "weight":
        return mask & kernels.reshape(*kernels.shape, *(1,) * (mask.dim() - 2)).expand(mask.shape)
    return kernels.clone() if granularity == "kernel" else kernels.any(1)


def _cat_dim(node: fx.Node) -> object:
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)


def _tensors(node: fx.Node) -> list[fx.Node]:
    args = node.args[0] if _is_cat(node) else node.args
    flat = list(args) if isinstance(args, list | tuple) else [args]
    return [a for a in flat if isinstance(a, fx.Node)]


def _is_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _CAT


def _vector(channels: Channels, width: int) -> Tensor:
    if isinstance(channels, bool):
        return torch.full((width,), channels)
    if channels.numel() == 1 and width != 1:
        return channels.expand(width)
    if channels.numel() != width:
        raise GraphError(f"a map with {channels.numel()} channels feeds a layer expecting {width}")
    return channels


def _some(channels: Channels) -> bool:
    return channels if isinstance(channels, bool) else bool(channels.any())


def _union(a: Channels, b: Channels) -> Channels:
    if isinstance(a, bool) or isinstance(b, bool):
        if a is True or b is True:
            return True
        return b if a is False else a
    return a | b


class _Layer:
    """A Conv/Linear's kernel connectivity, with its groups."""

    def __init__(self, module: nn.Module, kernels: Tensor | None) -> None:
        weight: Tensor = module.weight  # type: ignore[assignment]
        self.out, self.fan_in = weight.shape[:2]
        self.groups = int(getattr(module, "groups", 1))
        self.width = self.fan_in * self.groups
        self.k = (
            kernels if kernels is not None else torch.ones(self.out, self.fan_in, dtype=torch.bool)
        )

    def per_row(self, inputs: Channels) -> Tensor:
        """(out, fan_in): whether the input channel each kernel reads is live."""
        grouped = _vector(inputs, self.width).reshape(self.groups, self.fan_in)
        return grouped.repeat_interleave(self.out // self.groups, dim=0)

    def forward(self, inputs: Channels) -> Tensor:
        return (self.k & self.per_row(inputs)).any(1)

    def backward(self, useful: Tensor) -> Tensor:
        m = self.k & useful[:, None]
        return m.reshape(self.groups, self.out // self.groups, self.fan_in).any(1).reshape(-1)


class KernelPaths:
    """The graph up to one unit, traced once, to ask for many kernel masks which kernels lie
    on an input→unit path (:func:`effective_kernels` asks once).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(2, 1, 1))
    >>> paths = KernelPaths(model, "1", 0)
    >>> paths({"0.weight": torch.tensor([[True], [False]])})["1.weight"].tolist()
    [[True, False]]
    """

    def __init__(self, model: nn.Module, layer: str, channel: int) -> None:
        self._gm, self._target = trace_to(model, layer)
        self._channel = channel
        self._nodes = upstream(self._target)
        self._kinds = {node: _kind(node, model) for node in self._nodes}
        self._modules: dict[fx.Node, tuple[str, nn.Module]] = {}
        for node, kind in self._kinds.items():
            if kind == "maskable":
                name = f"{node.target}.weight"
                if any(n == name for n, _ in self._modules.values()):
                    raise GraphError(f"{node.target!r} is called more than once; shared layers "
                                     "are not supported by effective masks")  # fmt: skip
                self._modules[node] = (name, model.get_submodule(str(node.target)))

    def __call__(self, kernels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """For each maskable weight upstream of the layer: its kept kernels ``(out, in/groups)``
        on an input→unit path (``kernels``: the kept ones by weight name; missing: all)."""
        layers = {
            node: (name, _Layer(module, kernels.get(name)))
            for node, (name, module) in self._modules.items()
        }
        live: dict[fx.Node, Channels] = {}
        for node in self._nodes:
            live[node] = _live(node, self._kinds[node], live, layers)
        target = self._target
        useful: dict[fx.Node, Channels] = {
            target: _target(target, live[target], self._channel, layers)
        }
        for node in reversed(self._nodes):
            _spread(node, self._kinds[node], useful.get(node, False), useful, live, layers)
        out: dict[str, Tensor] = {}
        for node, (name, lay) in layers.items():
            source = _tensors(node)[0]
            wanted = _vector(useful.get(node, False), lay.out)
            out[name] = lay.k & wanted[:, None] & lay.per_row(live[source])
        return out

    def masks(
        self,
        masks: Mapping[str, Tensor],
        granularity: str,
        shapes: Mapping[str, tuple[int, ...]],
        regions: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:
        """The effective part of granularity-shaped ``masks`` (weights of ``shapes``): kept
        elements off every path are dropped, elements outside ``regions`` left as they are."""
        views = {n: kernel_view(m, granularity, shapes[n]) for n, m in masks.items()}
        paths = self(views)
        out = {}
        for name, mask in masks.items():
            new = from_kernels(mask, paths.get(name), granularity)
            region = regions.get(name)
            out[name] = torch.where(region, new, mask) if region is not None else new
        return out


def effective_kernels(
    model: nn.Module, layer: str, channel: int, kernels: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """For each maskable weight upstream of ``layer``: its kernels on an input→unit path.

    ``kernels`` gives the kept kernels ``(out, in/groups)`` by weight name (missing: all kept).
    """
    return KernelPaths(model, layer, channel)(kernels)


def _live(
    node: fx.Node,
    kind: str,
    live: dict[fx.Node, Channels],
    layers: dict[fx.Node, tuple[str, _Layer]],
) -> Channels:
    inputs = [live[a] for a in _tensors(node)] if kind not in ("placeholder", "get_attr") else []
    if kind == "placeholder":
        return True
    if kind == "get_attr" or not inputs:
        return False
    if kind == "maskable":
        return layers[node][1].forward(inputs[0])
    if kind == "cat":
        if any(isinstance(c, bool) for c in inputs):
            raise GraphError(
                f"{node.format_node()}: cannot tell the channel counts it concatenates"
            )
        return torch.cat([c for c in inputs if isinstance(c, Tensor)])
    if kind == "mix":  # any live input channel reaches every output channel
        return any(_some(c) for c in inputs)
    result: Channels = False
    for c in inputs:  # keep (one input) or merge (union)
        result = _union(result, c)
    return result


def _target(
    node: fx.Node, live: Channels, channel: int, layers: dict[fx.Node, tuple[str, _Layer]]
) -> Tensor:
    width = live.numel() if isinstance(live, Tensor) else None
    if node in layers:
        width = layers[node][1].out
    if width is None:
        raise GraphError(f"cannot tell how many channels {node.format_node()} has")
    return torch.arange(width) == channel


def _spread(
    node: fx.Node,
    kind: str,
    mine: Channels,
    useful: dict[fx.Node, Channels],
    live: dict[fx.Node, Channels],
    layers: dict[fx.Node, tuple[str, _Layer]],
) -> None:
    """Pass the useful channels of ``node``'s output on to its inputs."""
    if mine is False or kind in ("placeholder", "get_attr"):
        return
    sources = _tensors(node)
    if kind == "maskable":
        lay = layers[node][1]
        parts: list[Channels] = [lay.backward(_vector(mine, lay.out))]
    elif kind == "cat":
        widths = [int(c.numel()) for c in (live[s] for s in sources) if isinstance(c, Tensor)]
        vector, starts = _vector(mine, sum(widths)), [0, *itertools.accumulate(widths)]
        parts = [vector[a:b] for a, b in itertools.pairwise(starts)]
    elif kind == "mix":  # every input channel reaches the useful output channels
        parts = [_some(mine)] * len(sources)
    else:
        parts = [mine] * len(sources)
    for source, part in zip(sources, parts, strict=True):
        if isinstance(part, Tensor) and isinstance(live[source], Tensor):
            width = int(live[source].numel())  # type: ignore[union-attr]
            part = part.reshape(-1, width).any(0) if part.numel() != width else part
        useful[source] = _union(useful.get(source, False), part)
