"""The planted circuit in the context of the default method's own subnetwork ``S``: which
single-kernel moves the objective rewards there, and how far they take kernel F1.

Each kernel's marginal effect in ``S`` (:func:`polyprune.ablation.marginal_effects`):
``L(S − k) − L(S)`` for a kept kernel (what removing it alone costs), ``L(S) − L(S + k)`` for a
removed one (what putting it back alone gains); higher is more important to the objective.
Counted over the kernels inside the truth's region, as :func:`polyprune.evaluation.circuit_scores`
counts them:

- *missed*: circuit kernels ``S`` lacks; *substituted*: those whose gain is ≤ 0 (``S`` already
  does their work: putting one back alone does not lower the objective); *inert*: those whose
  gain is exactly 0 (putting one back alone changes nothing); *cut*: those on no path from
  the input to the unit through ``S`` with them (:meth:`polyprune.Masks.effective` drops them):
  a missing neighbour would have to come back too, which no single-kernel move does;
- *extras*: kernels ``S`` keeps off the circuit; *needed*: those whose removal alone raises the
  objective (effect > 0);
- *oracle* moves: put back the missed circuit kernels with gain > 0 and drop the extras with
  effect ≤ 0, the most single-kernel moves the objective rewards can give when an oracle picks
  only the circuit's side; *rewarded* moves: every move the objective rewards, circuit or not
  (put back every removed kernel with gain > 0, drop every kept kernel with effect ≤ 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import polyprune as pp

from ..run import Runner

if TYPE_CHECKING:
    from .methods import IdentRow

#: The arm whose subnetwork is the context (the default method: CS with ``both``).
CONTEXT_ARM = "CS both"
#: The counts :func:`counts` returns (fields of :class:`~.methods.IdentRow`; :func:`in_context`
#: adds ``cut``).
FIELDS = (
    "missed", "substituted", "inert", "extras", "needed",
    "oracle_tp", "oracle_fp", "oracle_fn", "rewarded_tp", "rewarded_fp", "rewarded_fn",
)  # fmt: skip


def effects_in(
    model: torch.nn.Module,
    unit: pp.Unit,
    images: Tensor,
    members: Tensor,
    masks: pp.Masks,
    loss: str = "both",
) -> dict[str, Tensor]:
    """Each kernel's marginal effect (module docstring) in the subnetwork ``masks`` (kernel
    granularity), on ``images`` with ``members`` the cluster, under the CS objective ``loss``
    (:func:`polyprune.ablation.marginal_effects`)."""
    return pp.ablation.marginal_effects(model, unit, images, members, masks, loss=loss)


def counts(kept: pp.Masks, truth: pp.Masks, effects: Mapping[str, Tensor]) -> dict[str, int]:
    """The counts of :data:`FIELDS` for the subnetwork ``kept`` against ``truth`` given each
    kernel's marginal effect in it (module docstring); kernels outside ``truth.regions``
    are not counted."""
    total = dict.fromkeys(FIELDS, 0)
    for name, want in truth.items():
        inside = truth.regions[name]
        got, e = kept[name].bool(), effects[name].detach().cpu()
        up, pos = e > 0, inside & want
        missed, extra, off = pos & ~got, inside & got & ~want, inside & ~got & ~want
        gained, added = int((missed & up).sum()), int((off & up).sum())
        needed = int((extra & up).sum())
        hit = int((pos & got).sum())
        total["missed"] += int(missed.sum())
        total["substituted"] += int((missed & ~up).sum())
        total["inert"] += int((missed & (e == 0)).sum())
        total["extras"] += int(extra.sum())
        total["needed"] += needed
        total["oracle_tp"] += hit + gained
        total["oracle_fp"] += needed
        total["oracle_fn"] += int((missed & ~up).sum())
        rewarded = int((pos & got & up).sum()) + gained
        total["rewarded_tp"] += rewarded
        total["rewarded_fp"] += needed + added
        total["rewarded_fn"] += int(pos.sum()) - rewarded
    return total


def cut_off(model: torch.nn.Module, kept: pp.Masks, truth: pp.Masks, unit: pp.Unit) -> int:
    """The circuit kernels of ``truth``'s region that ``kept`` lacks and that would lie on no
    input→unit path through ``kept`` with them added, one at a time."""
    n = 0
    for name, want in truth.items():
        for o, i in (want & truth.regions[name] & ~kept[name].bool()).nonzero().tolist():
            plus = {k: kept[k].clone() for k in kept}
            plus[name][o, i] = True
            masks = pp.Masks(plus, "kernel", weight_shapes=kept.weight_shapes,
                             regions=kept.regions)  # fmt: skip
            n += not bool(masks.effective(model, unit)[name][o, i])
    return n


def in_context(
    run: Runner, fitted: Mapping[str, Mapping[int, pp.Subnetwork]], cluster: int, truth: pp.Masks
) -> dict[str, Any]:
    """:func:`counts` for cluster ``cluster``'s subnetwork of :data:`CONTEXT_ARM` (with
    ``context``: the arm's name), or nothing when that arm was not fitted."""
    sub = fitted.get(CONTEXT_ARM, {}).get(cluster)
    if sub is None:
        return {}
    x, y = run.fit_x[run.clean], run.fit_y[run.clean]
    effects = effects_in(run.case.model, run.unit, x, y == cluster, sub.masks)
    cut = cut_off(run.case.model, sub.masks, truth, run.unit)
    return {"context": CONTEXT_ARM, **counts(sub.masks, truth, effects), "cut": cut}


def f1(tp: int, fp: int, fn: int) -> float:
    """Kernel F1 from counts (0 when there is nothing to find and nothing found)."""
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def f1s(rows: Sequence[IdentRow]) -> tuple[float, float, float]:
    """Mean over the measured ``rows`` (their clusters) of the kernel F1 of ``S``, after the
    oracle's moves and after every rewarded move; NaN without any."""
    mine = [r for r in rows if r.context]
    if not mine:
        return math.nan, math.nan, math.nan
    s = [f1(r.kernels - r.missed, r.extras, r.missed) for r in mine]
    oracle = [f1(r.oracle_tp, r.oracle_fp, r.oracle_fn) for r in mine]
    rewarded = [f1(r.rewarded_tp, r.rewarded_fp, r.rewarded_fn) for r in mine]
    return _mean(s), _mean(oracle), _mean(rewarded)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "–"


def _share(part: int, whole: int) -> str:
    return f"{_pct(part, whole)} of {whole}" if whole else "–"


#: The identifiability table's columns of this context.
HEADER = (
    f"missed circuit kernels {CONTEXT_ARM}'s S substitutes (gain ≤ 0)",
    "missed: inert (gain 0) / on no path through S with it",
    "extras the objective needs (effect > 0)",
    "F1 of S / reachable by rewarded moves, oracle / all (mean)",
)


def cells(rows: Sequence[IdentRow]) -> list[str]:
    """The :data:`HEADER` cells of ``rows`` (kernels pooled, F1 the mean over clusters)."""
    mine = [r for r in rows if r.context]
    if not mine:
        return ["–"] * len(HEADER)
    missed, extras = sum(r.missed for r in mine), sum(r.extras for r in mine)
    return [
        _share(sum(r.substituted for r in mine), missed),
        f"{_pct(sum(r.inert for r in mine), missed)} / {_pct(sum(r.cut for r in mine), missed)}",
        _share(sum(r.needed for r in mine), extras),
        " / ".join(f"{v:.2f}" for v in f1s(mine)),
    ]


def line(rows: Sequence[IdentRow], setting: str) -> str | None:
    """The goals' sentence on ``setting``: S's F1, what the rewarded moves reach, and why."""
    mine = [r for r in rows if r.context and r.family == setting]
    if not mine:
        return None
    own, oracle, every = f1s(mine)
    missed, extras = max(sum(r.missed for r in mine), 1), sum(r.extras for r in mine)
    substituted, inert = sum(r.substituted for r in mine), sum(r.inert for r in mine)
    return (
        f"on {setting}, in the context of {CONTEXT_ARM}'s own subnetwork S (mean over "
        f"{len(mine)} clusters): S's F1 is {own:.3f}; the single-kernel moves the objective "
        f"rewards, an oracle taking only the circuit's side (put back each missed circuit kernel "
        f"whose return alone lowers the objective, drop each extra whose removal alone does not "
        f"raise it), reach {oracle:.3f}; every rewarded move, circuit or not, gives "
        f"{every:.3f}. Of the {sum(r.missed for r in mine)} circuit kernels S misses, "
        f"{substituted / missed:.0%} would not lower the objective if put back alone: "
        f"{inert / missed:.0%} change it not at all, and putting back the other "
        f"{(substituted - inert) / missed:.0%} raises it (S already does their work); "
        f"{sum(r.cut for r in mine) / missed:.0%} of the missed lie on no input→unit path "
        f"through S "
        f"even when put back (a missing neighbour would have to come back too). "
        f"{sum(r.needed for r in mine) / max(extras, 1):.0%} of S's {extras} extra kernels "
        f"raise the objective when removed alone"
    )
