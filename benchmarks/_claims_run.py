"""Private to ``benchmarks/claims.py``: the cases and the experiment run on each of them.

Every number comes from the library: :func:`polyprune.study` (top-k crops, clustering, held-out
split), :func:`polyprune.fit_subnetwork`, :func:`polyprune.evaluate`, :func:`polyprune.overlap`,
:func:`polyprune.separation` and, for the planted circuits, the demo's ``circuit_scores``.
The results are flat JSON-ready rows (one per subnetwork, one per pair of subnetworks, one per
clustering) that ``_claims_verdicts`` aggregates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from torch import Tensor, nn

import polyprune as pp
from polyprune import zoo

#: Concept pairs of the planted variants: seed ``s`` uses ``PLANTED_PAIRS[s % 3]``.
PLANTED_PAIRS: tuple[tuple[str, str], ...] = (
    ("hstripes", "rings"),
    ("vstripes", "blobs"),
    ("dstripes", "checker"),
)
#: Seed offset of the planted variants' images (``concept_images(seed=IMAGE_SEED + s)``).
IMAGE_SEED = 1000
SCORERS = ("ActGrad", "SNIP", "FORCE", "Magnitude", "Random")


@dataclass(frozen=True)
class Config:
    """What one run of the benchmark does (every field is printed in the report)."""

    planted_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    trained: tuple[str, ...] = ("concepts-merged", "digits-merged")
    trained_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    keeps: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    lams: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    cs_lam: float = 1.0  # fit_subnetwork's default: "CS at its own kept fraction"
    epochs: int = 25
    planted_images: int = 1500
    planted_k: int = 300
    trained_k: int = 100
    held_out: float = 0.2
    outside: int = 400
    force_rounds: int = 10


@dataclass(frozen=True)
class Case:
    """One model, its polysemantic unit, the images searched and their true concepts."""

    name: str
    family: str
    seed: int
    model: nn.Module
    unit: pp.Unit
    images: Tensor
    concepts: list[str]
    pair: tuple[str, str]
    k: int
    truth: Mapping[str, pp.Masks] | None = None


@dataclass
class CaseResult:
    """Rows of one case: ``fits`` (one per subnetwork), ``pairs`` and ``clustering``."""

    clustering: dict[str, Any]
    fits: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def planted_case(seed: int, cfg: Config) -> Case:
    """Planted variant ``seed``: pair ``PLANTED_PAIRS[seed % 3]``, shuffle/cross kernels by seed."""
    pair = PLANTED_PAIRS[seed % len(PLANTED_PAIRS)]
    model, truth = zoo.planted_network(pair, distractors=2, seed=seed)
    images, labels = zoo.concept_images(
        cfg.planted_images, size=zoo.PLANTED_SIZE, seed=IMAGE_SEED + seed
    )
    names = [zoo.CONCEPTS[i] for i in labels.tolist()]
    return Case(
        f"planted-{seed}", "planted", seed, model, pp.Unit(*zoo.PLANTED_TARGET), images, names,
        pair, cfg.planted_k, truth,
    )  # fmt: skip


def trained_case(name: str, seed: int, cfg: Config) -> Case:
    """A trained zoo model on the demo's data; ``seed`` changes the split, CS order and Random,
    and for concepts-merged the images (seed 0: ``zoo.eval_data``, then fresh held-out sets)."""
    card = zoo.model_card(name)
    if name == "digits-merged":  # the data set is fixed: all 1,797 digits, as the demo
        images, labels = zoo.digits("all")
    else:
        images, labels = zoo.eval_data(name, seed)
    names = [card.concepts[i] for i in labels.tolist()]
    return Case(
        f"{name}-{seed}", name, seed, zoo.load(name), pp.Unit(*card.unit), images, names,
        card.merged, cfg.trained_k,
    )  # fmt: skip


def cases(cfg: Config) -> list[Callable[[], Case]]:
    """Lazy constructors of every case of ``cfg`` (built one at a time)."""
    out: list[Callable[[], Case]] = [lambda s=s: planted_case(s, cfg) for s in cfg.planted_seeds]
    for name in cfg.trained:
        out += [lambda n=name, s=s: trained_case(n, s, cfg) for s in cfg.trained_seeds]
    return out


def _method(name: str, cfg: Config, seed: int, label: int) -> Any:
    """``"cs"`` or a fresh scorer, for this cluster (Random draws independently per cluster)."""
    if name == "CS":
        return "cs"
    options = {"rounds": cfg.force_rounds} if name == "FORCE" else {}
    return pp.scoring.create(name.lower(), progress=False, **options).for_cluster(seed, label)


def _majority(case: Case, result: pp.results.StudyResult) -> dict[int, tuple[str, float]]:
    """The majority concept of each cluster and its share."""
    return result.clustering.majority([case.concepts[i] for i in result.top.indices.tolist()])


class _Runner:
    """Fits and evaluates the subnetworks of one case (state shared by all methods)."""

    def __init__(self, case: Case, result: pp.results.StudyResult, cfg: Config) -> None:
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
        self, method: str, keep: float | None, label: int | None = None, **options: Any
    ) -> dict[int, pp.results.Subnetwork]:
        """One subnetwork per cluster (members: the cluster; others: the other clusters), as
        :func:`polyprune.study` fits them; only cluster ``label`` if given."""
        x, y = self.fit_x[self.clean], self.fit_y[self.clean]
        labels = range(self.result.clustering.n_clusters) if label is None else [label]
        out = {}
        for c in labels:
            how = _method(method, self.cfg, self.case.seed, c)
            out[c] = pp.fit_subnetwork(
                self.case.model, self.unit, x, y == c, how, keep=keep, seed=self.case.seed,
                progress=False, **options,
            )  # fmt: skip
        return out

    def record(
        self, out: CaseResult, method: str, grid: str, setting: float, subs: dict[int, Any]
    ) -> None:
        """Evaluate ``subs`` and append their fit and pair rows to ``out``."""
        model, case = self.case.model, self.case
        ev = pp.evaluate(
            model, self.unit, self.fit_x, self.fit_y, subs, held_out=(self.held_x, self.held_y)
        )
        base = {"case": case.name, "family": case.family, "seed": case.seed, "method": method,
                "grid": grid, "setting": setting}  # fmt: skip
        effective = {}
        for label, sub in subs.items():
            c = ev.clusters[label]
            mine = self.held_y == label
            after_out = self.unit.activations(model, self.outside, masks=sub.masks)
            after_held = self.unit.activations(model, self.held_x[mine], masks=sub.masks)
            row = {
                **base, "cluster": label, "concept": self.majority[label],
                "kept": sub.kept_fraction, "paper_kept": sub.paper_kept_fraction,
                "auroc_before": c.before.auroc, "auroc_fit": c.after.auroc,
                "auroc_held": _auroc(c.after_held_out), "dprime_held": _dprime(c.after_held_out),
                "r_held": c.pearson_r_held_out,
                "out_before": pp.evaluation.separation(self.orig_held[mine], self.orig_out).auroc,
                "out_after": pp.evaluation.separation(after_held, after_out).auroc,
            }  # fmt: skip
            effective[label] = sub.masks.effective(model)
            row["eff_kept"] = effective[label].kept_fraction()
            truth = (case.truth or {}).get(self.majority[label])
            if truth is not None:
                found = pp.evaluation.circuit_scores(sub.masks, truth)
                eff = pp.evaluation.circuit_scores(effective[label], truth)
                row.update(
                    precision=found.precision, recall=found.recall, f1=found.f1, eff_f1=eff.f1
                )
            out.fits.append(row)
        truths = {c: (case.truth or {}).get(self.majority[c]) for c in subs}
        for (a, b), o in ev.overlaps.items():
            e = pp.evaluation.overlap(effective[a], effective[b])
            empty = effective[a].kept_weights() + effective[b].kept_weights() == 0
            out.pairs.append({
                **base, "clusters": [a, b], "iou": o.iou, "expected_iou": o.expected_iou,
                "p_value": o.p_value, "eff_iou": math.nan if empty else e.iou,
                "eff_expected_iou": math.nan if empty else e.expected_iou,
                "eff_p_value": e.p_value,
            })  # fmt: skip
            ta, tb = truths[a], truths[b]
            if ta is not None and tb is not None:
                shared, in_circuits = _shared_kernels(subs[a].masks, subs[b].masks, ta, tb)
                out.pairs[-1].update(shared=shared, shared_in_circuits=in_circuits)


def _shared_kernels(a: pp.Masks, b: pp.Masks, ta: pp.Masks, tb: pp.Masks) -> tuple[int, int]:
    """Kernels (in the region) kept by both subnetworks, and how many lie in a true circuit."""
    shared = in_circuits = 0
    for name, region in ta.regions.items():
        both = a[name] & b[name] & region
        shared += int(both.sum())
        in_circuits += int((both & (ta[name] | tb[name])).sum())
    return shared, in_circuits


def _auroc(s: pp.results.Separation | None) -> float:
    return float("nan") if s is None else s.auroc


def _dprime(s: pp.results.Separation | None) -> float:
    return float("nan") if s is None else s.dprime


def _clustering_row(case: Case, result: pp.results.StudyResult) -> dict[str, Any]:
    c = result.clustering
    truth = [case.concepts[i] for i in result.top.indices.tolist()]
    labels = c.labels.tolist()
    clustered = [i for i, lab in enumerate(labels) if lab >= 0]
    majority = _majority(case, result) if c.n_clusters else {}
    return {
        "case": case.name, "family": case.family, "seed": case.seed, "pair": list(case.pair),
        "k": len(result.top), "n_clusters": c.n_clusters, "sizes": c.sizes,
        "noise": c.noise_fraction,
        "ari_all": float(adjusted_rand_score(truth, labels)),
        "ari": float(adjusted_rand_score([truth[i] for i in clustered],
                                         [labels[i] for i in clustered]))
        if len(clustered) > 1 else float("nan"),
        "in_pair": float(np.mean([t in case.pair for t in truth])),
        "majority": [[n, share] for n, share in majority.values()],
    }  # fmt: skip


def run_case(case: Case, cfg: Config, log: Callable[[str], None]) -> CaseResult:
    """The whole experiment on one case: clustering, every method × setting, evaluations."""
    torch.manual_seed(case.seed)
    np.random.seed(case.seed)
    t = time.perf_counter()
    result = pp.study(
        case.model, case.unit, case.images, k=case.k, methods=(), held_out=cfg.held_out,
        seed=case.seed, progress=False,
    )  # fmt: skip
    out = CaseResult(_clustering_row(case, result))
    if case.truth is not None:  # the planted circuits themselves: disjoint by construction
        o = pp.evaluation.overlap(case.truth[case.pair[0]], case.truth[case.pair[1]])
        out.clustering.update(
            truth_iou=o.iou, truth_expected_iou=o.expected_iou, truth_p=o.p_value,
            truth_kept=[case.truth[c].kept_fraction() for c in case.pair],
        )  # fmt: skip
    out.seconds["study"] = time.perf_counter() - t
    row = out.clustering
    log(
        f"{case.name} ({'/'.join(case.pair)}): {row['n_clusters']} clusters {row['sizes']}, "
        f"noise {row['noise']:.0%}, ARI {row['ari']:.2f}"
    )
    if not result.is_polysemantic:
        log(f"{case.name}: not polysemantic, no subnetworks to fit")
        return out
    run = _Runner(case, result, cfg)
    for method in SCORERS:
        t = time.perf_counter()
        for keep in cfg.keeps:
            run.record(out, method, "keep", keep, run.fit(method, keep))
        out.seconds[method] = time.perf_counter() - t
    t = time.perf_counter()
    default = None
    for lam in cfg.lams:
        subs = run.fit("CS", None, config=pp.CSConfig(epochs=cfg.epochs, lam=lam))
        run.record(out, "CS", "lam", lam, subs)
        default = subs if math.isclose(lam, cfg.cs_lam) else default
    out.seconds["CS"] = time.perf_counter() - t
    if default is not None:  # every scorer at CS's own kept fraction, cluster by cluster
        t = time.perf_counter()
        for method in SCORERS:
            subs = {}
            for label, sub in default.items():
                if sub.kept_fraction > 0:  # an empty CS subnetwork has nothing to match
                    subs.update(run.fit(method, sub.kept_fraction, label))
            if subs:
                run.record(out, method, "matched", cfg.cs_lam, subs)
        out.seconds["matched"] = time.perf_counter() - t
    log(f"{case.name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in out.seconds.items()))
    return out
