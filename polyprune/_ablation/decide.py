"""Private (methods): how ablation decides one batch of candidate kernels (the rule: the
package docstring, "Stopping early")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from . import _Ablator as Ablator

__all__ = ["visit"]


def visit(run: Ablator, name: str, rows: Tensor, cols: Tensor, now: float, tau: float) -> float:
    """Decide one batch of candidates of layer ``name``; return the objective after."""
    if not len(rows):
        return now
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
    chosen = (deltas <= tau).nonzero().squeeze(1).tolist()
    if len(chosen) == 1:
        run.remove(name, int(rows[chosen[0]]), int(cols[chosen[0]]), _mean_of(means, chosen[0]))
        return float(losses[chosen[0]])
    return _split(run, name, rows, cols, chosen, means, now, tau)


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
    if (abs(trial - now) <= tau) if unchanged else (trial - now <= tau * len(ks)):
        return trial
    for k in ks:
        run.restore(name, int(rows[k]), int(cols[k]), _mean_of(means, k))
    return None


def _split(
    run: Ablator, name: str, rows: Tensor, cols: Tensor, ks: list[int],
    means: Tensor | None, now: float, tau: float,
) -> float:  # fmt: skip
    """Remove what can be removed of ``ks``: all together, else each half in turn (a single
    candidate: ACDC's test against the objective now)."""
    if not ks:
        return now
    trial = _take(run, name, rows, cols, ks, means, now, tau)
    if trial is not None:
        return trial
    if len(ks) == 1:
        return now
    half = len(ks) // 2
    now = _split(run, name, rows, cols, ks[:half], means, now, tau)
    return _split(run, name, rows, cols, ks[half:], means, now, tau)
