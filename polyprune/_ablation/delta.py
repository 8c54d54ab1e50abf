"""Private (methods): the unit under each candidate removal from the change alone.

Where the graph after the ablated layer is a chain (each node reads only the one before it) up to
the unit, every candidate's evaluation starts from the layer's output computed once for the
current kernels (cached, with every node after it), and carries only the change: removing kernel
``(o, i)`` changes channel ``o`` of the layer's output by ``−w_oi ∗ x_i``; an operation that
treats every channel alike and alone (ReLU, max-pool, dropout, ...) keeps the change in that one
channel (``f(x_o + Δ) − f(x_o)``); a convolution spreads it to every output channel by the
one-input-channel convolution ``conv(Δ, W[:, o])`` (it is linear; bias and mean corrections are
constants), and from there the change is carried over all channels (``f(x + Δ) − f(x)`` for any
other operation). The convolution that makes the unit's channel, when only such channel-alike
operations follow it, computes that one channel at the unit's position; every map before it is
then computed only on the window the unit reads of it, as far back as each step can run on a
window (:mod:`polyprune._ablation.windows`; on AlexNet's ``features.3`` half the work). The same
result as running the graph on each candidate's images (floats aside), at a fraction of the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._graph.run import read_unit
from ..targets import Unit
from .graph import _CONV, FromLayer
from .steps import (
    Step,
    alike,
    conv_step,
    crop,
    numeric,
    out_size,
    pointwise,
    reads,
    split,
    windowed,
)
from .windows import Window, conv_reads, cut, step_reads

__all__ = ["Chain"]


class Chain:
    """The unit's activation under candidate removals of one layer, from its change alone.

    ``ok``: whether the graph after the layer is a chain up to the unit's layer (otherwise the
    caller runs the graph). ``producer``: the module that makes the unit's channel
    (:func:`~polyprune._graph.regions.channel_producer`, found before masking).
    ``correction(module)``: the constant the caller's hook adds to that masked module's output
    (mean ablation), or None; ``masked``: the modules carrying such a hook.
    """

    def __init__(
        self,
        model: nn.Module,
        unit: Unit,
        partial: FromLayer,
        module: str,
        producer: str | None,
        masked: set[str],
        correction: Callable[[str], Tensor | None],
    ) -> None:
        self.ok = False
        if not partial.ok:
            return
        self.partial, self.unit, self.correction = partial, unit, correction
        #: the unit's position, where its conv is computed only there (None: the whole map)
        self.at: tuple[int, ...] | None = None
        self._unit_module: nn.Module | None = None
        #: per map of :meth:`forward` (the layer's output, then each step's), the window the
        #: unit reads (None: the whole map), and how each step runs there (windows.py);
        #: computed for the first input size seen (one run: one size)
        self._plan: tuple[tuple[int, ...], list[Window | None], list[str | None]] | None = None
        self.model = model
        rest = set(partial.rest)
        calls = [n for n in partial.rest if n.op == "call_module" and n.target == module]
        if len(calls) != 1:
            return
        node = self.first = calls[0]
        layer0 = model.get_submodule(module)
        #: the ablated layer, where it can be computed on a window of its output (a plain conv
        #: with numeric padding, no hook on it but ours); None: computed whole, then cropped
        ours = 1 if module in masked else 0
        plain = conv_step(layer0, ours) and numeric(layer0)
        self._layer: Any = layer0 if plain else None
        steps: list[Step] = []
        while node is not partial.target:
            users = [u for u in node.users if u in rest]
            if len(users) != 1 or users[0].all_input_nodes != [node]:
                return
            node = users[0]
            layer = model.get_submodule(str(node.target)) if node.op == "call_module" else None
            hooks = 1 if str(node.target) in masked else 0
            if layer is not None and conv_step(layer, hooks):
                steps.append(Step(node, "conv", layer))
            else:
                steps.append(Step(node, "alike" if alike(node, model) else "other", layer))
        if len(steps) + 1 != len(rest):
            return
        for k, step in enumerate(steps):
            after = steps[k + 1 :]
            if (
                step.kind == "conv"
                and step.node.target == producer
                and all(s.kind == "alike" for s in after)
            ):
                steps[k] = Step(step.node, "unit", step.module)
                self._unit_module = step.module
                if pointwise(after, model) and windowed(step.module, unit.position):
                    self.at = unit.position
        self.steps, self.ok = steps, True
        # the outputs for the last two states of the layer's kernels: a trial that is undone
        # (a batch removed together, then restored) finds the state before it still there
        self.cached: list[tuple[tuple[Tensor, ...], list[list[Tensor]]]] = []

    def outputs(self, key: tuple[Tensor, ...], inputs: list[Tensor]) -> list[list[Tensor]]:
        """:meth:`forward` on each of ``inputs``, computed again only when ``key`` (the state
        of the layer's kernels) is neither of the last two calls'."""
        for old, outs in self.cached:
            if len(key) == len(old) and all(map(torch.equal, key, old)):
                return outs
        with torch.no_grad():
            outs = [self.forward(x) for x in inputs]
        self.cached = [*self.cached[-1:], (tuple(k.clone() for k in key), outs)]
        return outs

    @property
    def _position(self) -> tuple[int, ...] | None:
        """The unit's position in the last output (computed there only: 0, 0)."""
        return self.unit.position if self.at is None else (0,) * len(self.at)

    # -- running ---------------------------------------------------------------------------
    def _run(self, step: Step | None, x: Tensor) -> Tensor:
        node = self.first if step is None else step.node
        interpreter = self.partial.interpreter
        source = self.partial.input if step is None else node.all_input_nodes[0]
        interpreter.env = {source: x}
        try:
            out: Tensor = interpreter.run_node(node)
            return out
        finally:
            interpreter.env = {}

    def _unit_conv(
        self, step: Step, x: Tensor, bias: bool, offset: tuple[int, ...] | None = None
    ) -> Tensor:
        """The unit's channel of ``step``'s convolution: ``(N, 1, *map)`` (``(N, 1, 1, ...)``
        where it is computed at the unit's position only)."""
        module: Any = step.module
        c = self.unit.channel
        b = module.bias[c : c + 1] if bias and module.bias is not None else None
        out = self._conv(module, x, module.weight[c : c + 1], b, 1, None, offset)
        corr = self.correction(str(step.node.target)) if bias else None
        if corr is None:
            return out
        corr = corr[c : c + 1]
        if self.at is not None:
            assert self.unit.position is not None
            corr = corr[(slice(None), *self.unit.position)].reshape(1, *out.shape[2:])
        return out + corr.to(out)

    def _conv(
        self,
        module: Any,
        x: Tensor,
        w: Tensor,
        b: Tensor | None,
        groups: int,
        ranges: list[tuple[int, int]] | None = None,
        offset: tuple[int, ...] | None = None,
    ) -> Tensor:
        """``module``'s convolution with weight ``w`` on ``x`` (whose first position is at
        ``offset`` of its map): on the whole map, at the output ``ranges`` (first, last) per
        dimension, or for the unit's conv at the unit's position only."""
        conv = _CONV[w.dim() - 2]
        if self.at is not None and module is self._unit_module:
            ranges = [(p, p) for p in self.at]
        if ranges is None:
            out: Tensor = conv(x, w, b, module.stride, module.padding, module.dilation, groups)
            return out
        x = reads(module, ranges, x, offset or (0,) * len(ranges))
        out = conv(x, w, b, module.stride, 0, module.dilation, groups)
        return out

    def _sparse_conv(
        self,
        module: Any,
        d: Tensor,
        w: Tensor,
        ranges: list[tuple[int, int]] | None,
        offset: tuple[int, ...] | None,
    ) -> Tensor:
        """Each candidate's change ``d`` ``(K, N, m, *map)`` of ``m`` channels through
        ``module`` with its own weights ``w`` ``(K, out, m, *kernel)``: ``(K, N, out, *map)``. A
        2-d conv runs as one batched matrix product of the patches (a grouped conv of K groups
        is slow)."""
        k, n = d.shape[:2]
        if self.at is not None and module is self._unit_module:
            ranges = [(p, p) for p in self.at]
        if w.dim() != 5 or isinstance(module.padding, str):
            y = self._conv(module, d.transpose(0, 1).flatten(1, 2), w.flatten(0, 1), None, k,
                           ranges, offset)  # fmt: skip
            return y.reshape(n, k, -1, *y.shape[2:]).transpose(0, 1)
        x, stride, padding = d.flatten(0, 1), module.stride, module.padding
        if ranges is not None:
            x, padding = reads(module, ranges, x, offset or (0, 0)), (0, 0)
        size = out_size(module, x.shape[2:], padding)
        patches = F.unfold(x, w.shape[3:], module.dilation, padding, stride)  # (K·N, m·P, L)
        patches = patches.reshape(k, n, *patches.shape[1:]).transpose(1, 2).flatten(2)
        y = torch.bmm(w.flatten(2), patches)  # (K, out, N·L)
        return y.reshape(k, w.shape[1], n, *size).transpose(1, 2).contiguous()

    def forward(self, x: Tensor) -> list[Tensor]:
        """The layer's output and every node's after it on the layer's input ``x``, each on the
        window the unit reads of it (the unit's conv: its channel only)."""
        wins, modes = self._windows(x)
        if wins[0] is not None and self._layer is not None:  # only where the unit reads
            layer = self._layer
            out = self._conv(layer, x, layer.weight, layer.bias, 1, wins[0])
            corr = self.correction(str(self.first.target))
            outs = [out if corr is None else out + crop(corr[None], wins[0]).to(out)]
        else:
            outs = [self._run(None, x)]
            if wins[0] is not None:
                outs[0] = crop(outs[0], wins[0])
        for i, step in enumerate(self.steps):
            src, dst = wins[i], wins[i + 1]
            at = None if src is None else tuple(a for a, _ in src)
            if step.kind == "unit":
                outs.append(self._unit_conv(step, outs[-1], True, at))
            elif step.kind == "conv" and numeric(step.module) and dst is not None:  # where read
                module: Any = step.module
                out = self._conv(module, outs[-1], module.weight, module.bias, 1, dst, at)
                corr = self.correction(str(step.node.target))
                outs.append(out if corr is None else out + crop(corr[None], dst).to(out))
            else:  # a copy: an in-place op (ReLU(inplace=True)) must not change the cache
                outs.append(self._apply(i, outs[-1].clone(), modes[i], src, dst))
        return outs

    def _apply(
        self, i: int, x: Tensor, mode: str | None, src: Window | None, dst: Window | None
    ) -> Tensor:
        """Step ``i`` on ``x`` (on the window ``src`` of its input map; None: all of it), its
        outputs on the window ``dst``: a ``"valid"`` step's cut, a whole map's cropped."""
        y = self._run(self.steps[i], x)
        if dst is None:
            return y
        return crop(y, dst) if src is None else cut(y, dst) if mode == "valid" else y

    def _windows(self, x: Tensor) -> tuple[list[Window | None], list[str | None]]:
        """The window of each map :meth:`forward` computes on the layer's input ``x`` (None:
        the whole map) and how each step runs on it (:mod:`~polyprune._ablation.windows`):
        from the unit's conv back, as long as each step can run on a window."""
        key = tuple(x.shape[1:])
        if self._plan is not None and self._plan[0] == key:
            return self._plan[1], self._plan[2]
        n = len(self.steps)
        wins: list[Window | None] = [None] * (n + 1)
        modes: list[str | None] = [None] * n
        unit = [i for i, s in enumerate(self.steps) if s.kind == "unit"]
        if self.at is not None and unit:
            with torch.no_grad():  # whole maps, on one image
                full = [self._run(None, x[:1])]
                for step in self.steps[: unit[0]]:
                    full.append(self._run(step, full[-1].clone()))
            # what the unit's conv reads of its input map (None where only padding)
            read = conv_reads(self._unit_module, [(p, p) for p in self.at], full[unit[0]].shape[2:])
            wins[unit[0]] = read if all(a <= b for a, b in read) else None
            for i in reversed(range(unit[0])):
                after = wins[i + 1]
                if after is None:
                    break
                args, kwargs = self._args(self.steps[i], full[i])
                found = step_reads(self.steps[i], self.model, args, kwargs, full[i],
                                   full[i + 1], after)  # fmt: skip
                if found is None:
                    break
                wins[i], modes[i] = found
        self._plan = (key, wins, modes)
        return wins, modes

    def _args(self, step: Step, x: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``step``'s node's evaluated arguments with ``x`` as its input."""
        interpreter = self.partial.interpreter
        interpreter.env = {step.node.all_input_nodes[0]: x}
        try:
            args, kwargs = interpreter.fetch_args_kwargs_from_env(step.node)
            return tuple(args), dict(kwargs)
        finally:
            interpreter.env = {}

    def read(self, outs: list[Tensor]) -> Tensor:
        """The unit from :meth:`forward`'s outputs: ``(N,)``."""
        unit = any(s.kind == "unit" for s in self.steps)
        return read_unit(outs[-1], 0 if unit else self.unit.channel, self._position)

    def removals(self, outs: list[Tensor], change: Tensor, channels: Tensor) -> Tensor:
        """The unit with each candidate's change ``change`` ``(K, N, m, *map)`` to channels
        ``channels[k]`` ``(K, m)`` of the layer's output (``outs``: :meth:`forward` on these
        images): ``(K, N)``."""
        k, n = change.shape[:2]
        d: Tensor = change  # (K, N, m, *map): m channels each (sparse) ...
        idx: Tensor | None = channels.to(change.device)  # ... or None: all channels (dense)
        assert self._plan is not None  # forward() made ``outs``
        wins, modes = self._plan[1], self._plan[2]
        if wins[0] is not None:  # on the window the unit reads of the layer's output
            d = split(crop(d.flatten(0, 1), wins[0]), k, n)
        for i, (step, before, after) in enumerate(
            zip(self.steps, outs[:-1], outs[1:], strict=True)
        ):
            src, dst = wins[i], wins[i + 1]
            at = None if src is None else tuple(a for a, _ in src)
            if idx is not None and step.kind == "alike":
                new = self._apply(i, (_gather(before, idx) + d).flatten(0, 1), modes[i], src,
                                  dst)  # fmt: skip
                d = split(new, k, n) - _gather(after, idx)
            elif idx is not None and step.kind in ("conv", "unit"):
                module: Any = step.module
                c = self.unit.channel
                w = module.weight[:, idx] if step.kind == "conv" else module.weight[c, idx][None]
                ranges = dst if numeric(step.module) else None
                d = self._sparse_conv(module, d, w.transpose(0, 1), ranges, at)
                if ranges is None and dst is not None and step.kind == "conv":
                    d = split(crop(d.flatten(0, 1), dst), k, n)
                idx = None if step.kind == "conv" else torch.zeros_like(idx[:, :1])
            else:
                if idx is not None:  # the change over every channel from here on
                    dense = d.new_zeros(k, n, before.shape[1], *d.shape[3:]).flatten(3)
                    where = idx[:, None, :, None].expand(k, n, idx.shape[1], dense.shape[3])
                    dense.scatter_add_(2, where, d.flatten(3))
                    d, idx = dense.reshape(k, n, *before.shape[1:]), None
                if step.kind == "unit":
                    new = self._unit_conv(step, d.flatten(0, 1), False, at)
                    d = split(new, k, n)
                    idx = torch.zeros(k, 1, dtype=torch.long, device=d.device)
                elif step.kind == "conv":
                    module = step.module
                    ranges = dst if numeric(step.module) else None
                    new = self._conv(module, d.flatten(0, 1), module.weight, None, 1, ranges, at)
                    d = split(new if ranges is not None or dst is None else crop(new, dst), k, n)
                else:
                    new = self._apply(i, (before.unsqueeze(0) + d).flatten(0, 1), modes[i], src,
                                      dst)  # fmt: skip
                    d = split(new, k, n) - after.unsqueeze(0)
        base = self.read(outs)
        unit = any(s.kind == "unit" for s in self.steps)
        channel = 0 if unit else self.unit.channel
        if idx is None:
            delta = read_unit(d.flatten(0, 1), channel, self._position)
        else:  # (K·N, m) at the unit's position, of its channel only
            delta = read_unit(d.flatten(0, 1), None, self._position)
            delta = (split(delta, k, n) * (idx == channel)[:, None].to(delta)).sum(2).flatten()
        return base + split(delta, k, n)


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    """Channels ``idx`` ``(K, m)`` of ``t`` ``(N, C, *map)``: ``(K, N, m, *map)``."""
    k, m = idx.shape
    picked = t[:, idx.flatten()]
    return picked.reshape(t.shape[0], k, m, *t.shape[2:]).transpose(0, 1)
