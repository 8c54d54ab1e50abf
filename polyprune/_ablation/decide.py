"""Private (methods): how ablation decides one batch of candidate kernels (the rule: the
package docstring, "Stopping early")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from . import chained
from .graph import contributions
from .marginal import changed, one_each

if TYPE_CHECKING:
    from . import _Ablator as Ablator

__all__ = ["in_turn", "visit"]


def visit(run: Ablator, name: str, rows: Tensor, cols: Tensor, now: float, tau: float) -> float:
    """Decide one batch of candidates of layer ``name``; return the objective after."""
    if not len(rows):
        return now
    if run.sequential:
        return in_turn(run, name, rows, cols, now, tau)
    means = None
    if len(rows) > 1:  # all of them together first: one forward pass of the images
        if run.mean:
            means = run._meancontributions(
                run.model.get_submodule(name.rpartition(".")[0]), name, rows, cols
            )
        together = _take(run, name, rows, cols, list(range(len(rows))), means, now, tau, True)
        if together is not None:
            run.effects[name][rows, cols] = (together - now) / len(rows)
            return together
    losses = run.try_removals(name, rows, cols)
    means = run._mean_now if run.mean else None
    deltas = losses - now
    run.effects[name][rows, cols] = deltas.float()
    chosen = ((deltas <= tau) & (losses - run.best <= run.budget)).nonzero().squeeze(1).tolist()
    return _split(run, name, rows, cols, chosen, deltas, means, now, tau)


def _mean_of(means: Tensor | None, k: int) -> Tensor | None:
    return None if means is None else means[k]


def _take(
    run: Ablator, name: str, rows: Tensor, cols: Tensor, ks: list[int],
    means: Tensor | None, now: float, tau: float, unchanged: bool = False,
) -> float | None:  # fmt: skip
    """Remove the candidates ``ks`` together if the objective moves up by at most ``tau``
    each (``unchanged``: if it moves by at most ``tau`` in all, either way), returning the
    objective after; else restore them (None)."""
    for k in ks:
        run.remove(name, int(rows[k]), int(cols[k]), _mean_of(means, k))
    trial = run.current()
    close = (abs(trial - now) <= tau) if unchanged else (trial - now <= tau * len(ks))
    if close and run.allowed(trial):
        return run.reached(trial)
    for k in ks:
        run.restore(name, int(rows[k]), int(cols[k]), _mean_of(means, k))
    return None


def _split(
    run: Ablator, name: str, rows: Tensor, cols: Tensor, ks: list[int], deltas: Tensor,
    means: Tensor | None, now: float, tau: float,
) -> float:  # fmt: skip
    """Remove what can be removed of ``ks`` (in the batch's order), guided by their single
    effects ``deltas`` (the package docstring, "Stopping early"): the longest prefix whose
    summed effects fit the budget left, together, else that prefix halved;
    a candidate that fails alone is kept, and the prefixes after it start from one candidate
    again, twice as long after each one taken."""
    measured = True  # nothing removed since ``deltas`` were measured
    cap = len(ks)  # the longest prefix to try
    while ks:
        left = run.best + run.budget - now
        ks = [k for k in ks if float(deltas[k]) <= left]  # the others: kept
        if not ks:
            break
        total, m = 0.0, 0
        for k in ks:  # each delta ≤ tau, so any prefix also fits tau × its length
            if total + float(deltas[k]) > left:
                break
            total, m = total + float(deltas[k]), m + 1
        m = min(max(m, 1), cap)
        while True:
            if m == 1 and measured:  # measured alone against the objective now: no trial
                k = ks[0]
                run.remove(name, int(rows[k]), int(cols[k]), _mean_of(means, k))
                trial: float | None = run.reached(now + float(deltas[k]))
            else:
                trial = _take(run, name, rows, cols, ks[:m], means, now, tau)
            if trial is not None or m == 1:
                break
            m //= 2
        if trial is None:  # the first fails alone: kept
            ks, cap = ks[1:], 1
            continue
        now, ks, measured, cap = trial, ks[m:], False, 2 * cap
    return now


def in_turn(run: Ablator, name: str, rows: Tensor, cols: Tensor, now: float, tau: float) -> float:
    """ACDC's sequential rule on one batch of candidates of layer ``name``, in their order: each
    is removed when ``L(without it) − L(now) ≤ tau``, ``now`` after every earlier removal.

    Exact, in fewer forward passes than one per candidate where removals come in runs:
    removals in one layer add up in
    its output (removing kernel ``(o, i)`` subtracts ``w_oi ∗ x_i`` from channel ``o``), so one
    batched pass evaluates every *prefix* of a window of candidates removed together; the
    decisions follow the prefixes as long as each is accepted, which are then exactly the
    sequential ones, and the first rejected candidate ends the pass (it is kept; the rest are
    evaluated again from there). The window doubles after a pass with no rejection and falls
    back to one candidate after a rejection, so a run of removals costs few passes and a
    rejection wastes little. Each kernel's effect is its own ``L(without) − L(now)``. Where the
    graph after the layer is a chain, the prefixes come from their changes alone
    (:func:`~polyprune._ablation.chained.prefixes`)."""
    module = run.model.get_submodule(name.rpartition(".")[0])
    start, window = 0, 1
    while start < len(rows):
        r, c = rows[start : start + window], cols[start : start + window]
        means = run._meancontributions(module, name, r, c) if run.mean else None

        def change(m: nn.Module, x: Tensor, r: Tensor = r, c: Tensor = c,
                   means: Tensor | None = means) -> Tensor:  # fmt: skip
            rr, cc = r.to(x.device), c.to(x.device)
            removed = -contributions(m, x, rr, cc)  # (N, K, *map), the kept weights
            if means is not None:
                removed = removed + means.to(removed)[None]
            return one_each(removed, rr, m, x).cumsum(0)  # copy k: the first k + 1 removed

        if run._chain is not None:  # the chain after the layer: from the changes alone
            losses = [run.loss(a) for a in chained.prefixes(run, module, r, c, means)]
        else:
            losses = changed(run, name, len(r), change).tolist()
        kept = False
        for k, loss in enumerate(losses):
            run.effects[name][r[k], c[k]] = loss - now
            start += 1
            kept = loss - now > tau or not run.allowed(loss)
            if kept:  # decided: kept; the rest of the window is evaluated again
                break
            run.remove(name, int(r[k]), int(c[k]), _mean_of(means, k))
            now = run.reached(loss)
        # the next window: twice as long after a pass with no rejection, one candidate after
        # one (a pass costs an evaluation per candidate in it, decided or not)
        window = 1 if kept else min(2 * window, len(rows))
    return now
