"""Private (methods): ACDC-style iterative ablation of kernels (Conmy et al. 2023), batched.

The objective is one of Continuous Sparsification's (:mod:`polyprune._cs.loss`; default ``both``:
the unit's activation on the cluster, its silence on the others), evaluated with hard masks.
Kernels ``(out, in)`` are visited layer by layer from the unit back to the input; in each layer
only the kernels still on a path to the unit are candidates (the others are removed: they can
change nothing). A candidate is removed when removing it changes the objective by less than
``tau`` (``L_without − L_current < tau``, so a removal that helps is always taken), and when the
objective then stays within ``budget`` of the lowest it has reached in the run (ACDC's rule alone
lets each of ``n`` kernels cost up to ``tau``, so a wide layer can drift by ``n × tau``).

**Batching.** Removing kernel ``(o, i)`` of a layer changes only output channel ``o`` of that
layer, by ``−w_oi ∗ x_i``. So ``K`` candidates of one layer are evaluated in one forward pass:
the layer's input ``x`` is computed once per image batch, a forward hook on the layer stacks
``K`` copies of its output along the batch, each with one candidate's contribution taken out
(one grouped convolution gives all ``K`` contributions), and the rest of the network runs on
``K × B`` images. When the layer does not dominate the unit (a skip connection around it), the
images are repeated ``K`` times instead (the same result, the layers before it run ``K`` times).
While a layer is ablated its input cannot change (the layers before it are visited later), so
where nothing after the layer reads the graph before it but that input (a skip connection may
read the input itself), it is computed once per image batch and every evaluation runs only the
graph after the layer (:class:`~polyprune._ablation.graph.FromLayer`); where that graph is a
chain, each candidate carries only its change (:mod:`polyprune._ablation.delta`).

**Stopping early.** A batch of several candidates is first removed all together, in one
forward pass of the images: when that moves the objective by at most ``tau`` either way (the
batch, as a whole, matters no more than one kernel may), it is removed and each of its kernels
gets an equal share of the change as its effect; only otherwise is each candidate tried alone.
When a layer has more candidates than one batch holds, they are visited in the order of a
first-order estimate of their effect (``−∂L/∂m`` for a mask ``m`` of the layer's kept kernels,
one backward pass), least important first, so that the batches that can go together come
first. A batch that cannot go as a whole has each candidate removed alone (one batched pass),
which measures its effect ``d_k = L(without k) − L(now)``; those with ``d_k ≤ tau`` and
``L(without k)`` within ``budget`` of the lowest objective reached are then decided in the
batch's order, from these estimates:

1. ``left = best + budget − L(now)`` is what the budget still allows; the candidates with
   ``d_k > left`` are kept (their own effect does not fit).
2. The longest prefix of the rest whose running sum of ``d_k`` stays within ``left`` (and
   ``tau ×`` its length, as every ``d_k ≤ tau``) is removed together when the objective then
   moved by at most ``tau ×`` its length and stays within the budget; otherwise the prefix is
   halved and tried again, down to one candidate (one whose ``d_k`` was measured against the
   objective now is taken without a trial).
3. Repeat from 1 with the candidates after the prefix taken. A candidate that fails alone is
   kept, and the prefixes after it are at most one candidate long, twice as long after each
   one taken.

Where the budget binds, what cannot fit is kept without a trial, and a batch whose candidates
all fail together costs about one trial per candidate, not the ``2n − 1`` sets on ``n`` of
halving each failed set down to single kernels (the rule before). With one candidate per
forward pass this is ACDC's sequential rule exactly. With ``ablation="mean"`` a removed kernel
contributes its mean over the images (per position) instead of 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import _masking as mk
from .._cs.loss import both, loss_context
from .._graph.paths import effective_kernels
from .._graph.regions import channel_producer, unit_regions
from .._model import model_dtype_device
from .._progress import staged
from .._unit_io import unit_activation, unit_activations
from ..targets import Unit
from . import chained
from .decide import visit
from .delta import Chain
from .graph import FromLayer, contributions, dominates, order
from .weights import MaskedWeight

__all__ = ["AblationResult", "ablate"]

#: ``(a, d, y, shift, ctx) -> loss``, as the CS objectives.
ObjectiveFn = Callable[..., Tensor]


@dataclass
class AblationResult:
    """What :func:`ablate` found.

    ``kernels``: kept kernels ``(out, in)`` per weight (True outside the region, as
    :meth:`Masks.from_scores` does). ``effects``: per kernel, how much removing it changed the
    objective when it was visited (kept kernels: ``≥ tau``; 0 for kernels on no path and
    outside the region): a continuous score, higher is more important. ``history``: per layer
    visited (unit first), the objective after it, kernels kept, candidate evaluations and
    seconds.
    """

    kernels: dict[str, Tensor]
    effects: dict[str, Tensor]
    history: dict[str, list[float]] = field(default_factory=dict)


class _Ablator:
    """The state of one ablation run: kept kernels, mean corrections, the candidate hook."""

    #: keep each masked weight until its kept kernels change (False: compute it at every read)
    cache_weights = True

    def __init__(
        self,
        model: nn.Module,
        unit: Unit,
        images: Tensor,
        members: Tensor,
        objective: ObjectiveFn,
        mean: bool,
        batch_size: int,
        max_batch: int,
    ) -> None:
        self.model, self.unit, self.images = model, unit, images
        self.y = members.to(torch.bool)
        self.objective, self.mean = objective, mean
        self.batch_size, self.max_batch = batch_size, max_batch
        self.shapes, self.regions = unit_regions(model, unit.layer, unit.channel, "kernel")
        self.kept = {n: torch.ones(r.shape, dtype=torch.bool) for n, r in self.regions.items()}
        self.effects = {n: torch.zeros(r.shape) for n, r in self.regions.items()}
        self.corrections: dict[str, Tensor] = {}
        self._producer = channel_producer(model, unit.layer)  # before masks hide the weights
        self.dense = unit_activations(model, unit, images, None, batch_size)
        self.ctx = loss_context(self.dense, self.y, False, False)
        self.shift = torch.zeros(())
        self.evaluations = 0
        self.sequential = False  # decide each candidate in turn (decide.in_turn)
        self.budget = float("inf")  # the most the objective may rise above self.best
        self.best = float("inf")  # the lowest objective reached (kernels removed so far)
        # the candidates of the layer being ablated: (module name, rows, cols) and how to batch
        self._chunk: tuple[str, Tensor, Tensor] | None = None
        self._expand = True
        self._mean_now: Tensor | None = None  # the candidates' mean contributions (K, *map)
        self._leaf: dict[str, Tensor] = {}  # a float kernel mask to differentiate (estimates)
        self._from: FromLayer | None = None  # evaluations from the ablated layer's input
        self._cache: list[Tensor] = []  # its input on each image batch
        self._name: str | None = None  # the ablated weight
        self._chain: Chain | None = None  # evaluations from the change alone (delta.py)
        # masked weights are kept until their kept kernels change (weights.py): the changes
        self._changes = dict.fromkeys(self.shapes, 0)

    # -- the masked model ------------------------------------------------------------------
    @contextmanager
    def masked(self) -> Iterator[None]:
        dtype, device = model_dtype_device(self.model)
        params = {n: MaskedWeight(self, n, dtype, device) for n in self.shapes}
        handles = []
        try:
            for name in self.shapes:
                module = self.model.get_submodule(name.rpartition(".")[0])
                handles.append(module.register_forward_hook(self._hook(name)))
            with mk.attach(self.model, params):
                yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Tensor], Tensor | None]:
        def hook(module: nn.Module, args: Any, out: Tensor) -> Tensor | None:
            if name in self.corrections:
                out = out + self.corrections[name].to(out)
            if self._chunk is None or self._chunk[0] != name:
                return out if name in self.corrections else None
            _, rows, cols = self._chunk
            k = len(rows)
            x = args[0]
            n = x.shape[0] if self._expand else x.shape[0] // k
            c = contributions(module, x[:n], rows.to(x.device), cols.to(x.device))
            if self._expand:
                stacked = out.unsqueeze(0).expand(k, *out.shape).clone()
            else:
                stacked = out.reshape(k, n, *out.shape[1:]).clone()
            index = torch.arange(k, device=out.device)
            stacked[index, :, rows.to(out.device)] -= c.movedim(1, 0)
            if self.mean and self._mean_now is not None:
                stacked[index, :, rows.to(out.device)] += self._mean_now.to(out)[:, None]
            return stacked.flatten(0, 1)

        return hook

    # -- evaluating ------------------------------------------------------------------------
    def activations(self, k: int) -> Tensor:
        """The unit on every image for each of ``k`` candidates (``k = 0``: none): (max(k,1), N)."""
        dtype, device = model_dtype_device(self.model)
        parts = []
        with torch.no_grad():
            for j, x in enumerate(torch.split(self.images, self.batch_size)):
                a = self._unit(j, x.to(device, dtype), k if not self._expand else 0)
                parts.append(a.float().cpu().reshape(max(k, 1), -1))
        self.evaluations += max(k, 1)
        return torch.cat(parts, 1)

    def loss(self, a: Tensor) -> float:
        return float(self.objective(a, self.dense, self.y, self.shift, self.ctx))

    def current(self) -> float:
        if self._chain is None:
            return self.loss(self.activations(0)[0])
        self.evaluations += 1
        a = chained.trial(self)  # from the last state computed, where few kernels differ
        if a is None:
            a = torch.cat([self._chain.read(o).float().cpu() for o in self._chained()])
        return self.loss(a)

    def _chained(self) -> list[list[Tensor]]:
        """The chain's outputs on each image batch for the ablated layer's kernels now."""
        assert self._chain is not None and self._name is not None
        corr = self.corrections.get(self._name, torch.zeros(0))
        return self._chain.outputs((self.kept[self._name], corr), self._cache)

    def _unit(self, j: int, x: Tensor, repeat: int = 0) -> Tensor:
        """The unit on image batch ``j`` (``x``), from the cached layer input when there is
        one; the batch repeated ``repeat`` times (0: once)."""
        if self._from is not None:
            x = self._cache[j]
        if repeat:
            x = x.repeat(repeat, *(1,) * (x.dim() - 1))
        if self._from is not None:
            return self._from.activation(x)
        return unit_activation(self.model, x, self.unit)

    def start(self, module: str | None) -> None:
        """Evaluate from ``module``'s input on (cached) while it is ablated, where the graph
        after it reads nothing before it but that input; from the change alone where that
        graph is a chain (:class:`~polyprune._ablation.delta.Chain`). ``None``: stop."""
        self._from, self._cache, self._chain = None, [], None
        self._name = None if module is None else f"{module}.weight"
        partial = None if module is None else FromLayer(self.model, self.unit, module)
        if partial is not None and partial.ok:
            dtype, device = model_dtype_device(self.model)
            with torch.no_grad():
                batches = [x.to(device, dtype) for x in torch.split(self.images, self.batch_size)]
                self._cache = partial.inputs(self.model, batches)
            self._from = partial
            masked = {n.rpartition(".")[0] for n in self.shapes}
            chain = Chain(self.model, self.unit, partial, str(module), self._producer, masked,
                          lambda m: self.corrections.get(f"{m}.weight"))  # fmt: skip
            self._chain = chain if chain.ok else None

    def estimates(self, name: str, rows: Tensor, cols: Tensor) -> Tensor:
        """First-order estimates of each candidate's effect ``L(without) − L(now)``:
        ``−∂L/∂m`` for a mask ``m`` of the kept kernels of layer ``name`` (one forward and one
        backward pass over the images), ``(K,)``."""
        dtype, device = model_dtype_device(self.model)
        leaf = self.kept[name].to(device, dtype).requires_grad_()
        self._leaf[name] = leaf
        try:
            with torch.enable_grad():
                parts = [
                    self._unit(j, x.to(device, dtype)).float().cpu()
                    for j, x in enumerate(torch.split(self.images, self.batch_size))
                ]
                loss = self.objective(torch.cat(parts), self.dense, self.y, self.shift, self.ctx)
                (grad,) = torch.autograd.grad(loss, [leaf], allow_unused=True)
        finally:
            del self._leaf[name]
        if grad is None:
            return torch.zeros(len(rows))
        self.evaluations += 1
        return -grad.detach().float().cpu()[rows, cols]

    def try_removals(self, name: str, rows: Tensor, cols: Tensor) -> Tensor:
        """The objective with each candidate removed alone: ``(K,)``."""
        module = self.model.get_submodule(name.rpartition(".")[0])
        if self.mean:  # first: its forward pass must see no candidates
            self._mean_now = self._meancontributions(module, name, rows, cols)
        if self._chain is not None:
            acts = self._chained_removals(module, rows, cols)
        else:
            self._chunk = (name, rows, cols)
            try:
                acts = self.activations(len(rows))
            finally:
                self._chunk = None
        return torch.tensor([self.loss(a) for a in acts])

    def _chained_removals(self, module: nn.Module, rows: Tensor, cols: Tensor) -> Tensor:
        """:meth:`activations` for ``len(rows)`` candidates, from their changes alone."""
        return chained.removals(self, module, rows, cols)

    def _meancontributions(
        self, module: nn.Module, name: str, rows: Tensor, cols: Tensor
    ) -> Tensor:
        """Mean over the images of each candidate's contribution map ``(K, *map)``."""
        captured: list[Tensor] = []

        def grab(m: nn.Module, args: Any, out: Tensor) -> None:
            c = contributions(m, args[0], rows.to(args[0].device), cols.to(args[0].device))
            captured.append(c.detach().float().sum(0).cpu())

        handle = module.register_forward_hook(grab)
        try:
            self.activations(0)
        finally:
            handle.remove()
        self.evaluations -= 1
        return torch.stack(captured).sum(0) / self.images.shape[0]

    def allowed(self, loss: float) -> bool:
        """Whether the budget allows the objective ``loss``: at most ``budget`` above the
        lowest reached."""
        return loss - self.best <= self.budget

    def reached(self, loss: float) -> float:
        """Record the objective of the kernels now kept; return it."""
        self.best = min(self.best, loss)
        return loss

    def remove(self, name: str, o: int, i: int, mean: Tensor | None) -> None:
        self.kept[name][o, i] = False
        self._changes[name] += 1
        if mean is not None:
            corr = self.corrections.get(name)
            if corr is None:
                shape = (self.shapes[name][0], *mean.shape)
                corr = self.corrections[name] = torch.zeros(shape)
            corr[o] += mean

    def restore(self, name: str, o: int, i: int, mean: Tensor | None) -> None:
        self.kept[name][o, i] = True
        self._changes[name] += 1
        if mean is not None:
            self.corrections[name][o] -= mean


def ablate(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    *,
    tau: float,
    objective: ObjectiveFn = both,
    ablation: str = "zero",
    batch_size: int = 256,
    max_batch: int = 2048,
    sequential: bool = False,
    budget: float = float("inf"),
    progress: bool = False,
) -> AblationResult:
    """ACDC on the kernels that can reach the placed ``unit`` (module docstring).

    ``images`` ``(N, ...)`` and ``members`` ``(N,)`` bool as for CS; ``objective`` a CS objective
    (``both``, ``preserve``, ...); ``ablation`` ``"zero"`` or ``"mean"``; at most ``max_batch``
    images (candidates × images) per forward pass; ``sequential``: each candidate decided in
    turn, in index order (:func:`~polyprune._ablation.decide.in_turn`); ``budget``: every
    removal also keeps the objective within ``budget`` of the lowest reached (inf: none). The
    model must be in eval mode; it is left as found (parametrizations and hooks removed in
    ``finally``).
    """
    if ablation not in ("zero", "mean"):
        raise ValueError(f"ablation must be 'zero' or 'mean', got {ablation!r}")
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau >= 0:
        raise ValueError(f"tau must be a number ≥ 0, got {tau!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget >= 0:
        raise ValueError(f"budget must be a number ≥ 0, got {budget!r}")
    run = _Ablator(model, unit, images, members, objective, ablation == "mean",
                   min(batch_size, images.shape[0]), max_batch)  # fmt: skip
    history: dict[str, list[float]] = {"objective": [], "kept": [], "evaluations": [],
                                       "seconds": []}  # fmt: skip
    names = order(model, unit.layer, list(run.shapes))
    run.sequential, run.budget = sequential, budget
    per_forward = max(1, max_batch // run.batch_size)
    for name in staged(names, "ablation", unit="layer", show=progress):
        started = time.perf_counter()
        module = name.rpartition(".")[0]
        on_path = effective_kernels(model, unit.layer, unit.channel, run.kept)[name]
        region = run.regions[name]
        run.kept[name] &= on_path | ~region  # off every path: removing it changes nothing
        run._expand = dominates(model, unit.layer, module)
        candidates = (on_path & region).nonzero()
        with run.masked():
            run.start(module)
            now = run.reached(run.current())
            if not sequential and 1 < per_forward < len(candidates):  # least important first
                guess = run.estimates(name, candidates[:, 0], candidates[:, 1])
                candidates = candidates[torch.argsort(guess, stable=True)]
            for chunk in torch.split(candidates, per_forward):
                now = visit(run, name, chunk[:, 0], chunk[:, 1], now, tau)
        run.start(None)
        history["objective"].append(now)
        history["kept"].append(float((run.kept[name] & region).sum()))
        history["evaluations"].append(float(run.evaluations))
        history["seconds"].append(time.perf_counter() - started)
    return AblationResult(run.kept, run.effects, history)
