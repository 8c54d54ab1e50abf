"""Issue 23's arms: every method's subnetworks with their continuous scores (kernel-recovery ROC
AUC and curve), their fit time, and the identifiability of each planted circuit."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.metrics import roc_curve
from torch import Tensor, nn

import polyprune as pp
from polyprune.results import Subnetwork

from ..rows import _JSONRow
from ..run import CaseResult, Runner
from .context import in_context

#: The FPR grid of the stored ROC curves.
FPR = np.linspace(0.0, 1.0, 21)
#: A circuit kernel whose removal alone raises the objective by less than this is *weak*.
WEAK = 1e-3
#: The arm ``both background``: CS with ``both`` whose non-members are the other clusters' crops
#: and this many background crops (:func:`background`). With the case's 1500 images and top-300
#: the fit sees about 1.6× the crops of ``both`` (its time: the same factor).
BACKGROUND = 150
#: Its name (``--methods``; not run by default).
BACKGROUND_ARM = "both background"


@dataclass(frozen=True)
class IdentRow(_JSONRow):
    """Is the planted circuit of one cluster's concept identifiable from the objective?

    ``truth_objective``: the ``both`` objective of the true circuit on the fitting crops;
    ``best_objective`` / ``best_method``: the lowest any fitted subnetwork reached (lower is
    better); ``kernels``: the circuit's kernels; ``free``: those whose removal alone does not
    raise the objective (``≤ 0``: no objective can ask for them); ``weak``: those whose removal
    raises it by less than :data:`WEAK`; ``min_effect``: the smallest effect; ``init_silent``:
    the fraction of the cluster's crops on which the unit is exactly 0 under CS's initial soft
    masks (every maskable weight × ``CSConfig().init``), where no gradient reaches any
    mask logit; ``paper_silent``: the same under the paper's start (every weight × σ(0) = 0.5,
    ``CSConfig.paper().init``), which polyprune's default start (``CSConfig().init``, faded out
    over training) replaced because of this.

    In the context of the default method's own subnetwork ``S`` (``context``: its arm, ``""``
    when it was not fitted and the rest are 0; :mod:`~benchmarks.claims.faithful.context`):
    ``missed`` circuit kernels ``S`` lacks, of which ``substituted`` (putting one back alone
    does not lower the objective), ``inert`` (changes it not at all) and ``cut`` (on no path to
    the unit through ``S`` with it); ``extras`` it keeps off
    the circuit, of which ``needed`` (removing one alone raises the objective); the kernel
    counts after the single-kernel moves the objective rewards, restricted to the circuit's side
    (``oracle_*``) and all of them (``rewarded_*``).
    """

    case: str
    family: str
    seed: int
    cluster: int
    concept: str
    truth_objective: float
    best_objective: float
    best_method: str
    kernels: int
    free: int
    weak: int
    min_effect: float
    init_silent: float = math.nan
    paper_silent: float = math.nan
    context: str = ""
    missed: int = 0
    substituted: int = 0
    inert: int = 0
    cut: int = 0
    extras: int = 0
    needed: int = 0
    oracle_tp: int = 0
    oracle_fp: int = 0
    oracle_fn: int = 0
    rewarded_tp: int = 0
    rewarded_fp: int = 0
    rewarded_fn: int = 0


def roc_tpr(scores: Mapping[str, Tensor], truth: pp.Masks) -> tuple[float, ...]:
    """The kernel-recovery ROC curve of ``scores``: TPR at each FPR of :data:`FPR`."""
    pos, neg = [], []
    for name, want in truth.items():
        s = scores[name].detach().float()
        s = s.reshape(s.shape[0], s.shape[1], -1).amax(2) if s.dim() > 2 else s
        inside = truth.regions[name]
        pos.append(s[want & inside])
        neg.append(s[~want & inside])
    a, b = torch.cat(pos).numpy(), torch.cat(neg).numpy()
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[a, b])
    return tuple(float(v) for v in np.interp(FPR, fpr, tpr))


def scores_of(run: Runner, sub: Subnetwork, label: int) -> Mapping[str, Tensor] | None:
    """The continuous scores behind a subnetwork: CS's final logits, ablation's effect sizes,
    a scorer's scores (recomputed on the cluster's crops)."""
    if sub.method == "cs":
        return None if sub.state is None else sub.state["logits"]
    if sub.method == "ablation":
        return None if sub.state is None else sub.state["effects"]
    x, y = run.fit_x[run.clean], run.fit_y[run.clean]
    scorer = pp.scoring.create(sub.method, progress=False)
    return scorer.score(run.case.model, x[y == label], run.unit)


def background_indices(run: Runner, n: int = BACKGROUND) -> Tensor:
    """The indices of ``n`` of the case's images that are not among the unit's top-k, drawn at
    random (seeded by the case): what a user has without labels (images the unit does not fire
    on most), not chosen by concept."""
    in_top = torch.zeros(len(run.case.images), dtype=torch.bool)
    in_top[run.result.top.indices] = True
    rest = (~in_top).nonzero().flatten()
    gen = torch.Generator().manual_seed(run.case.seed)
    return rest[torch.randperm(len(rest), generator=gen)[:n]]


def background(run: Runner, n: int = BACKGROUND) -> Tensor:
    """The images of :func:`background_indices`, cropped at the unit's position as the top-k
    crops are (the non-members the arm ``both background`` adds)."""
    top = run.result.top
    x = run.case.images[background_indices(run, n)]
    return x if top.field is None else top.field.crop(x, top.unit.position).images


#: Arms that are a registered method with options (``FaithfulConfig.methods`` names them);
#: like ``ablation`` they find their own kept fraction.
VARIANTS: dict[str, Callable[[], pp.Method]] = {
    "ablation sequential": lambda: pp.ablation.Ablation(sequential=True, progress=False),
}


def method_of(name: str) -> str | pp.Method:
    """What :func:`fit_timed` fits for the arm ``name``: a variant's method, else the name."""
    make = VARIANTS.get(name)
    return name if make is None else make()


def fit_timed(
    run: Runner,
    how: str | pp.Method,
    keeps: Mapping[int, float] | None = None,
    config: pp.CSConfig | None = None,
    extra: Tensor | None = None,
) -> tuple[dict[int, Subnetwork], dict[int, float]]:
    """One subnetwork per cluster (as :meth:`Runner.fit`), and the seconds each fit took;
    ``extra``: more non-members of every cluster (:func:`background`)."""
    x, y = run.fit_x[run.clean], run.fit_y[run.clean]
    if extra is not None:
        x, y = torch.cat([x, extra]), torch.cat([y, y.new_full((len(extra),), -1)])
    subs, seconds = {}, {}
    for c in range(run.result.clustering.n_clusters):
        t = time.perf_counter()
        subs[c] = pp.fit_subnetwork(
            run.case.model, run.unit, x, y == c, how, keep=None if keeps is None else keeps[c],
            config=config, seed=run.case.seed, progress=False,
        )  # fmt: skip
        seconds[c] = time.perf_counter() - t
    return subs, seconds


def complete(
    run: Runner,
    out: CaseResult,
    start: int,
    subs: Mapping[int, Subnetwork],
    seconds: Mapping[int, float],
) -> None:
    """Add ROC AUC, ROC curve and fit time to the rows ``out.fits[start:]`` just recorded."""
    for i in range(start, len(out.fits)):
        row = out.fits[i]
        sub = subs[row.cluster]
        truth = run.case.true_circuit(row.concept)
        extra: dict[str, object] = {"seconds": seconds[row.cluster]}
        scores = scores_of(run, sub, row.cluster) if truth is not None else None
        if truth is not None and scores is not None:
            extra["roc_auc"] = pp.evaluation.circuit_scores(sub.masks, truth, scores).roc_auc
            extra["roc_tpr"] = roc_tpr(scores, truth)
        out.fits[i] = replace(row, **extra)  # type: ignore[arg-type]


def identifiability(run: Runner, fitted: Mapping[str, Mapping[int, Subnetwork]]) -> list[IdentRow]:
    """Per cluster with a planted circuit: the truth's objective against the best fitted one,
    the effect of removing each of the truth's kernels alone, and the single-kernel moves the
    objective rewards in the default method's subnetwork (:func:`.context.in_context`)."""
    x, y = run.fit_x[run.clean], run.fit_y[run.clean]
    model, case = run.case.model, run.case
    rows = []
    at_init = _at_init(run, x, pp.CSConfig().init)
    at_paper = _at_init(run, x, pp.CSConfig.paper().init)
    for c, concept in run.majority.items():
        truth = case.true_circuit(concept)
        if truth is None:
            continue
        members = y == c
        base, effects = pp.ablation.removal_effects(model, run.unit, x, members, truth)
        found = [
            (pp.ablation.removal_effects(model, run.unit, x, members, subs[c].masks,
                                         effects=False)[0], arm)
            for arm, subs in fitted.items() if c in subs
        ]  # fmt: skip
        best, arm = min(found) if found else (math.nan, "–")
        inside = [effects[n][truth[n] & truth.regions[n]] for n in truth]
        e = torch.cat(inside)
        row = IdentRow(
            case.name, case.family, case.seed, c, concept, base, best, arm,
            kernels=int(e.numel()), free=int((e <= 0).sum()), weak=int((e < WEAK).sum()),
            min_effect=float(e.min()) if e.numel() else math.nan,
            init_silent=float((at_init[members] == 0).float().mean()),
            paper_silent=float((at_paper[members] == 0).float().mean()),
            **in_context(run, fitted, c, truth),
        )  # fmt: skip
        rows.append(row)
    return rows


def _at_init(run: Runner, x: Tensor, init: float) -> Tensor:
    """The unit on ``x`` with every maskable weight scaled by the initial mask value ``init``."""
    model = copy.deepcopy(run.case.model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.mul_(init)
    return run.unit.activations(model, x)


def kept_of(subs: Mapping[int, Subnetwork]) -> dict[int, float]:
    """Each cluster's kept fraction (at least the smallest keep a cut allows)."""
    return {c: max(s.kept_fraction, 1e-4) for c, s in subs.items()}
