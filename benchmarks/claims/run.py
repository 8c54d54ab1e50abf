"""The experiment run on each case; it returns typed rows (:mod:`benchmarks.claims.rows`).

Every number comes from polyprune's public API: :func:`polyprune.study` (top-k crops,
clustering, held-out split), :func:`polyprune.fit_subnetwork`, :func:`polyprune.evaluate`,
:func:`polyprune.evaluation.overlap`, :func:`polyprune.evaluation.separation`,
:func:`polyprune.evaluation.circuit_scores` (planted circuits) and
:meth:`polyprune.Unit.activations`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torch import Tensor

import polyprune as pp
from polyprune.results import Separation, StudyResult, Subnetwork

from .cases import Case
from .config import SCORERS, Config
from .rows import ClusteringRow, FitRow, PairRow


@dataclass
class CaseResult:
    """Rows of one case: ``fits`` (one per subnetwork), ``pairs`` and ``clustering``."""

    clustering: ClusteringRow
    fits: list[FitRow] = field(default_factory=list)
    pairs: list[PairRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _method(name: str, cfg: Config, seed: int, label: int) -> str | pp.Method:
    """``"cs"`` or a fresh scorer, for this cluster (Random draws independently per cluster)."""
    if name == "CS":
        return "cs"
    options = {"rounds": cfg.force_rounds} if name == "FORCE" else {}
    return pp.methods.create(name.lower(), progress=False, **options).for_cluster(seed, label)


def _majority(case: Case, result: StudyResult) -> dict[int, tuple[str, float]]:
    """The majority concept of each cluster and its share."""
    return result.clustering.majority([case.concepts[i] for i in result.top.indices.tolist()])


class Runner:
    """Fits and evaluates the subnetworks of one case (state shared by all methods)."""

    def __init__(self, case: Case, result: StudyResult, cfg: Config) -> None:
        self.case, self.result, self.cfg = case, result, cfg
        top = result.top
        assert top.inputs is not None and top.input_unit is not None
        self.unit = top.input_unit
        labels = torch.from_numpy(result.clustering.labels)
        crops = top.inputs
        self.fit_x, self.fit_y = crops[result.fit_index], labels[result.fit_index]
        self.held_x, self.held_y = crops[result.held_index], labels[result.held_index]
        self.clean = self.fit_y >= 0
        self.majority = {c: n for c, (n, _) in _majority(case, result).items()}
        self.outside = self._outside_crops()
        self.orig_out = self.unit.activations(case.model, self.outside)
        self.orig_held = self.unit.activations(case.model, self.held_x)

    def _outside_crops(self) -> Tensor:
        """Up to ``cfg.outside`` images of other concepts that are not among the top-k."""
        in_top = set(self.result.top.indices.tolist())
        idx = [
            i
            for i, c in enumerate(self.case.concepts)
            if c not in self.case.pair and i not in in_top
        ][: self.cfg.outside]
        x = self.case.images[idx]
        top = self.result.top
        return top.field.crop(x, top.unit.position).images if top.field is not None else x

    def fit(
        self,
        method: str,
        keep: float | None,
        label: int | None = None,
        config: pp.CSConfig | None = None,
    ) -> dict[int, Subnetwork]:
        """One subnetwork per cluster (members: the cluster; others: the other clusters), as
        :func:`polyprune.study` fits them; only cluster ``label`` if given."""
        x, y = self.fit_x[self.clean], self.fit_y[self.clean]
        labels = range(self.result.clustering.n_clusters) if label is None else [label]
        out = {}
        for c in labels:
            how = _method(method, self.cfg, self.case.seed, c)
            out[c] = pp.fit_subnetwork(
                self.case.model, self.unit, x, y == c, how, keep=keep, config=config,
                seed=self.case.seed, progress=False,
            )  # fmt: skip
        return out

    def record(
        self,
        out: CaseResult,
        method: str,
        grid: str,
        setting: float,
        subs: Mapping[int, Subnetwork | pp.Masks],
        loss: str = "separate",
    ) -> None:
        """Evaluate ``subs`` (subnetworks, or bare masks such as the true circuits) and append
        their fit and pair rows to ``out``; ``loss``: the CS objective the rows refer to."""
        model, case = self.case.model, self.case
        masks = {label: _masks(sub) for label, sub in subs.items()}
        ev = pp.evaluate(
            model, self.unit, self.fit_x, self.fit_y, masks, held_out=(self.held_x, self.held_y)
        )
        effective = {}
        for label, sub in subs.items():
            c = ev.clusters[label]
            mine = self.held_y == label
            after_out = self.unit.activations(model, self.outside, masks=masks[label])
            after_held = self.unit.activations(model, self.held_x[mine], masks=masks[label])
            out_before = pp.evaluation.separation(self.orig_held[mine], self.orig_out).auroc
            out_after = pp.evaluation.separation(after_held, after_out).auroc
            effective[label] = masks[label].effective(model)
            truth = case.true_circuit(self.majority[label])
            found = eff = None
            if truth is not None:
                found = pp.evaluation.circuit_scores(masks[label], truth)
                eff = pp.evaluation.circuit_scores(effective[label], truth)
            row = FitRow(
                case.name, case.family, case.seed, method, grid, setting,
                cluster=label, concept=self.majority[label], kept=masks[label].kept_fraction(),
                paper_kept=None if isinstance(sub, pp.Masks) else sub.paper_kept_fraction,
                auroc_before=c.before.auroc, auroc_fit=c.after.auroc,
                auroc_held=_auroc(c.after_held_out), dprime_held=_dprime(c.after_held_out),
                r_held=c.pearson_r_held_out, out_before=out_before, out_after=out_after,
                eff_kept=effective[label].kept_fraction(),
                precision=None if found is None else found.precision,
                recall=None if found is None else found.recall,
                f1=None if found is None else found.f1,
                eff_f1=None if eff is None else eff.f1,
                rel_err_held=c.relative_error_held_out, act_kept_held=c.activation_kept_held_out,
                true_kept=None if truth is None else truth.kept_fraction(), loss=loss,
            )  # fmt: skip
            out.fits.append(row)
        truths = {c: case.true_circuit(self.majority[c]) for c in subs}
        for (a, b), o in ev.overlaps.items():
            e = pp.evaluation.overlap(effective[a], effective[b])
            empty = effective[a].kept_weights() + effective[b].kept_weights() == 0
            pair = PairRow(
                case.name, case.family, case.seed, method, grid, setting,
                clusters=(a, b), iou=o.iou, expected_iou=o.expected_iou, p_value=o.p_value,
                eff_iou=math.nan if empty else e.iou,
                eff_expected_iou=math.nan if empty else e.expected_iou, eff_p_value=e.p_value,
                loss=loss,
            )  # fmt: skip
            ta, tb = truths[a], truths[b]
            if ta is not None and tb is not None:
                shared, in_circuits = _shared_kernels(masks[a], masks[b], ta, tb)
                pair = replace(pair, shared=shared, shared_in_circuits=in_circuits)
            out.pairs.append(pair)

    def record_matched(
        self,
        out: CaseResult,
        grid: str,
        setting: float,
        subs: Mapping[int, Subnetwork],
        loss: str = "separate",
    ) -> None:
        """Fit every scorer at the kept fraction of each of ``subs`` (CS's subnetworks), cluster
        by cluster, and record them (an empty CS subnetwork has nothing to match)."""
        for method in SCORERS:
            matched: dict[int, Subnetwork] = {}
            for label, sub in subs.items():
                if sub.kept_fraction > 0:
                    matched.update(self.fit(method, sub.kept_fraction, label))
            if matched:
                self.record(out, method, grid, setting, matched, loss)

    def record_truth(self, out: CaseResult) -> None:
        """The true circuit of each cluster's majority concept, evaluated as a subnetwork
        (method ``"truth"``, grid ``"truth"``; planted cases, clusters of a planted concept)."""
        truths = {c: self.case.true_circuit(n) for c, n in self.majority.items()}
        found = {c: t for c, t in truths.items() if t is not None}
        if found:
            self.record(out, "truth", "truth", 0.0, found)


def _masks(sub: Subnetwork | pp.Masks) -> pp.Masks:
    return sub if isinstance(sub, pp.Masks) else sub.masks


def _shared_kernels(a: pp.Masks, b: pp.Masks, ta: pp.Masks, tb: pp.Masks) -> tuple[int, int]:
    """Kernels (in the region) kept by both subnetworks, and how many lie in a true circuit."""
    shared = in_circuits = 0
    for name, region in ta.regions.items():
        both = a[name] & b[name] & region
        shared += int(both.sum())
        in_circuits += int((both & (ta[name] | tb[name])).sum())
    return shared, in_circuits


def _auroc(s: Separation | None) -> float:
    return float("nan") if s is None else s.auroc


def _dprime(s: Separation | None) -> float:
    return float("nan") if s is None else s.dprime


def _clustering_row(case: Case, result: StudyResult) -> ClusteringRow:
    c = result.clustering
    truth = [case.concepts[i] for i in result.top.indices.tolist()]
    labels = c.labels.tolist()
    clustered = [i for i, lab in enumerate(labels) if lab >= 0]
    majority = _majority(case, result) if c.n_clusters else {}
    ari = (
        float(adjusted_rand_score([truth[i] for i in clustered], [labels[i] for i in clustered]))
        if len(clustered) > 1
        else float("nan")
    )
    row = ClusteringRow(
        case.name, case.family, case.seed, pair=case.pair, k=len(result.top),
        n_clusters=c.n_clusters, sizes=tuple(c.sizes), noise=c.noise_fraction,
        ari_all=float(adjusted_rand_score(truth, labels)), ari=ari,
        in_pair=float(np.mean([t in case.pair for t in truth])),
        majority=tuple((n, share) for n, share in majority.values()),
    )  # fmt: skip
    if case.truth is not None:  # the planted circuits themselves: disjoint by construction
        o = pp.evaluation.overlap(case.truth[case.pair[0]], case.truth[case.pair[1]])
        row = replace(
            row, truth_iou=o.iou, truth_expected_iou=o.expected_iou, truth_p=o.p_value,
            truth_kept=tuple(case.truth[c].kept_fraction() for c in case.pair),
        )  # fmt: skip
    return row


def prepare(
    case: Case, cfg: Config, log: Callable[[str], None]
) -> tuple[CaseResult, Runner | None]:
    """The study of one case (top-k crops, clusters, held-out split) and its clustering row;
    the runner that fits its subnetworks, or None when the unit is not polysemantic."""
    torch.manual_seed(case.seed)
    np.random.seed(case.seed)
    t = time.perf_counter()
    result = pp.study(
        case.model, case.unit, case.images, k=case.k, methods=(), held_out=cfg.held_out,
        seed=case.seed, progress=False,
    )  # fmt: skip
    out = CaseResult(_clustering_row(case, result))
    out.seconds["study"] = time.perf_counter() - t
    row = out.clustering
    log(
        f"{case.name} ({'/'.join(case.pair)}): {row.n_clusters} clusters {list(row.sizes)}, "
        f"noise {row.noise:.0%}, ARI {row.ari:.2f}"
    )
    if not result.is_polysemantic:
        log(f"{case.name}: not polysemantic, no subnetworks to fit")
        return out, None
    return out, Runner(case, result, cfg)


def circuit_recovery(run: Runner, out: CaseResult, cfg: Config) -> None:
    """CS with each other objective of ``cfg.objectives`` at each of its λ; every scorer at the
    kept fraction of fit_subnetwork's default objective (``both``) at its default λ, if that is
    in the sweep; and the true circuits (planted cases)."""
    default = pp.CSConfig()
    for loss, lams in cfg.objectives:
        for lam in lams:
            config = pp.CSConfig(loss=loss, epochs=cfg.epochs, lam=lam)
            subs = run.fit("CS", None, config=config)
            run.record(out, "CS", "objective", lam, subs, loss)
            if loss == default.loss and math.isclose(lam, default.penalty_weight):
                run.record_matched(out, "matched-objective", lam, subs, loss)
    run.record_truth(out)


def run_case(case: Case, cfg: Config, log: Callable[[str], None]) -> CaseResult:
    """The whole experiment on one case: clustering, every method × setting, evaluations."""
    out, run = prepare(case, cfg, log)
    if run is None:
        return out
    for method in SCORERS:
        t = time.perf_counter()
        for keep in cfg.keeps:
            run.record(out, method, "keep", keep, run.fit(method, keep))
        out.seconds[method] = time.perf_counter() - t
    t = time.perf_counter()
    default = None
    for lam in cfg.lams:
        config = pp.CSConfig(loss="separate", epochs=cfg.epochs, lam=lam)  # the paper's objective
        subs = run.fit("CS", None, config=config)
        run.record(out, "CS", "lam", lam, subs)
        default = subs if math.isclose(lam, cfg.cs_lam) else default
    out.seconds["CS"] = time.perf_counter() - t
    if default is not None:  # every scorer at CS's own kept fraction, cluster by cluster
        t = time.perf_counter()
        run.record_matched(out, "matched", cfg.cs_lam, default)
        out.seconds["matched"] = time.perf_counter() - t
    t = time.perf_counter()
    circuit_recovery(run, out, cfg)  # last: the rows above do not depend on it
    out.seconds["objectives"] = time.perf_counter() - t
    log(f"{case.name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in out.seconds.items()))
    return out
