"""The paper's six claims, checked on ground truth; writes ``docs/results.md``.

Runs the paper's pipeline (``polyprune.study``: top-k receptive-field crops, HDBSCAN clusters,
held-out split) on several variants of the planted-superposition network (circuits known kernel
by kernel) and on the trained zoo models ``concepts-merged`` and ``digits-merged``; fits one
subnetwork per cluster with ActGrad, SNIP, FORCE, Magnitude and Random at several keeps and
with Continuous Sparsification over a λ sweep, then every scorer again at CS's own kept
fraction; measures separation (AUROC, d′) on fitted and held-out crops, behaviour on images of
other concepts, circuit precision/recall/F1 against the planted truth, cluster ARI against the
true concepts and subnetwork overlap against independence; and writes a verdict per claim with
its evidence, tables (mean ± std over seeds) and figures.

Usage::

    python benchmarks/claims.py                  # full run (~15 min, 2 cores): docs/results.md
    python benchmarks/claims.py --quick          # one seed, fewer keeps (< 3 min): a temp dir
    python benchmarks/claims.py --quick --out DIR --json DIR/results.json

Only the full default configuration writes to ``docs/`` unless ``--out`` says otherwise; the
generated ``results.md`` records the command, date, versions, seeds and wall time, and is never
edited by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the private _claims_* helpers

import torch
from _claims_report import write_markdown
from _claims_run import IMAGE_SEED, PLANTED_PAIRS, Config, cases, run_case
from _claims_verdicts import (
    ALPHA,
    ARI_OK,
    CHANGE,
    PAPER_RANGE,
    SEPARATES,
    WORKS,
    verdicts,
)

import polyprune as pp

CONCEPTS_EVAL_SEED = (
    2024  # zoo.eval_data("concepts-merged", seed) draws concept_images(seed=this + seed)
)

DOCS = Path(__file__).resolve().parents[1] / "docs"
QUICK = Config(
    planted_seeds=(0,),
    trained_seeds=(0,),
    keeps=(0.5, 0.1, 0.05, 0.01),
    lams=(1.0, 3.0),
)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    """Command-line arguments and the configuration they select."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, keeps 50/10/5/1 %%")
    parser.add_argument("--out", type=Path, help="output directory (results.md, img/)")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--planted-seeds", type=int, nargs="*", help="planted variants")
    parser.add_argument("--trained", nargs="*", help="trained zoo models (none: no names)")
    parser.add_argument("--trained-seeds", type=int, nargs="*", help="seeds of trained cases")
    parser.add_argument("--keeps", type=float, nargs="+", help="scorer kept fractions")
    parser.add_argument("--lams", type=float, nargs="+", help="CS λ sweep")
    parser.add_argument("--cs-lam", type=float, help="the λ of 'CS at its own kept fraction'")
    parser.add_argument("--epochs", type=int, help="CS epochs")
    parser.add_argument("--planted-images", type=int, help="images searched per planted case")
    parser.add_argument("--planted-k", type=int, help="top-k of the planted unit")
    parser.add_argument("--trained-k", type=int, help="top-k of the trained units")
    parser.add_argument("--outside", type=int, help="images of other concepts per case")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    changes = {
        f.name: getattr(args, f.name)
        for f in fields(Config)
        if getattr(args, f.name, None) is not None
    }
    for key in ("planted_seeds", "trained", "trained_seeds", "keeps", "lams"):
        if key in changes:
            changes[key] = tuple(changes[key])
    cfg = replace(cfg, **changes)
    if cfg.cs_lam not in cfg.lams:
        parser.error(f"--cs-lam {cfg.cs_lam} must be one of --lams {cfg.lams}")
    return args, cfg


def _versions() -> str:
    import hdbscan
    import numpy
    import sklearn

    hv = getattr(hdbscan, "__version__", None)
    if hv is None:
        from importlib.metadata import version

        hv = version("hdbscan")
    return (
        f"polyprune {pp.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, "
        f"scikit-learn {sklearn.__version__}, hdbscan {hv}, Python {platform.python_version()}"
    )


def _seeds(seeds: tuple[int, ...]) -> str:
    return ", ".join(map(str, seeds)) or "none"


def header(cfg: Config, argv: list[str], seconds: float) -> list[str]:
    """Title, how the file was generated, and how the claims were tested."""
    command = shlex.join(["python", "benchmarks/claims.py", *argv])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pairs = ", ".join(
        f"seed {s}: {'/'.join(PLANTED_PAIRS[s % len(PLANTED_PAIRS)])}" for s in cfg.planted_seeds
    )
    lo, hi = PAPER_RANGE
    return [
        "# The paper's claims, checked on ground truth",
        "",
        "<!-- Generated by benchmarks/claims.py. Do not edit by hand: rerun the command below. -->",
        "",
        f"Generated by `{command}` on {now} in {seconds / 60:.1f} min wall time "
        f"({torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs, "
        f"{platform.machine()}); {_versions()}. Do not edit by hand: rerun the command.",
        "",
        "## How the claims were tested",
        "",
        f"- **Planted network** (`zoo.planted_network`, exact circuits): seeds "
        f"{_seeds(cfg.planted_seeds)} ({pairs}); a seed changes the hidden-channel shuffle, the "
        f"distractors (2) and the cross kernels. Images: `zoo.concept_images("
        f"{cfg.planted_images}, size=32, seed={IMAGE_SEED} + seed)` (all 7 concepts); unit "
        f"`{pp.zoo.PLANTED_TARGET}` at the map centre; top-{cfg.planted_k} receptive-field crops.",
        f"- **Trained models** ({', '.join(cfg.trained) or 'none'}; seeds "
        f"{_seeds(cfg.trained_seeds)}): the model card's unit (a class logit, no crop), "
        f"top-{cfg.trained_k} of `zoo.digits('all')` (digits-merged, as `polyprune demo`) or "
        f"of `zoo.concept_images(2048, size=32, seed={CONCEPTS_EVAL_SEED} + seed)` "
        "(concepts-merged; seed 0 is `zoo.eval_data`, the others fresh held-out sets); a seed "
        "also changes the held-out split, the CS batch order and the Random scorer.",
        f"- **Pipeline**: `pp.study(..., methods=())` gives the top-k crops, their HDBSCAN "
        f"clusters (raw codes, min cluster size 5 % of k) and a held-out split "
        f"({cfg.held_out:.0%} of each cluster). Each cluster gets one subnetwork per method "
        "(`pp.fit_subnetwork`, kernel granularity; members: the cluster, non-members: the other "
        "clusters' crops, noise excluded).",
        f"- **Methods**: ActGrad, SNIP, FORCE ({cfg.force_rounds} rounds), Magnitude, Random "
        f"(an independent draw per cluster) at keep = "
        f"{', '.join(f'{k:g}' for k in cfg.keeps)}; Continuous Sparsification with "
        f"fit_subnetwork's defaults but {cfg.epochs} epochs (the demo's 25; default 50, "
        f"paper 160) at λ = {', '.join(f'{v:g}' for v in cfg.lams)}; λ = {cfg.cs_lam:g} (the "
        "default) is 'CS at its own kept fraction', and every scorer is fitted again at "
        "exactly that kept fraction, cluster by cluster ('matched').",
        "- **Kept fraction**: DESIGN count (kept / weights that can reach the unit); the "
        "paper's count over all weights of the masked layers is shown beside CS's.",
        "- **Separation**: `pp.evaluate`'s AUROC of the cluster's crops against the other "
        "clusters' under the cluster's subnetwork, on the fitted crops and on held-out crops; "
        f"a subnetwork *separates* at held-out AUROC ≥ {SEPARATES}, a method *works* at a keep "
        f"when more than {WORKS:.0%} of its subnetworks separate. d′ and Pearson r (subnetwork vs "
        "original on the cluster's held-out crops) from the same call.",
        f"- **Outside the fitting set** (claim 5): up to {cfg.outside} images of the other "
        "concepts, not in the top-k (cropped like the top-k); AUROC of the cluster's held-out "
        "crops against them, under the original network and under the subnetwork "
        f"(`pp.separation`); a drop ≥ {CHANGE}, or held-out AUROC ≥ {CHANGE} below the fitted "
        "AUROC, is a change of behaviour.",
        "- **Circuits** (planted only): kernel precision / recall / F1 of the subnetwork against "
        "the true circuit of the cluster's majority concept (`circuit_scores` of the demo), on "
        "the masks as fitted and on their effective part (`Masks.effective`: kernels on an "
        "input→unit path).",
        f"- **Clusters**: adjusted Rand index of the cluster labels against the true concepts "
        f"(on the clustered crops, and on all top-k with noise as one label; ≥ {ARI_OK} counts).",
        "- **Overlap** (claim 6): `pp.overlap` of the two clusters' subnetworks: IoU, the IoU "
        "expected if each layer's kept elements were drawn independently, and the p-value of "
        f"an intersection at least as large (α = {ALPHA}); also on the effective masks.",
        f"- Means ± std are over seeds of each seed's mean over clusters. The paper's CS range: "
        f"{100 * lo:g}–{100 * hi:g} %. Scorers at high keeps on the planted network keep many "
        "zero-score kernels (sparse gradients): which of those are kept is decided by order, not "
        "by score.",
        "",
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"results", "verdicts", "out", "seconds"}``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = parse(argv)
    torch.set_num_threads(args.threads)
    out = args.out or (DOCS if cfg == Config() else Path(tempfile.mkdtemp(prefix="claims-")))
    start = time.perf_counter()

    def log(message: str) -> None:
        elapsed = time.perf_counter() - start
        print(f"[claims {elapsed // 60:02.0f}:{elapsed % 60:04.1f}] {message}", flush=True)

    makers = cases(cfg)
    log(f"{len(makers)} cases; output: {out}")
    results: dict[str, Any] = {"config": asdict(cfg), "clustering": [], "fits": [], "pairs": []}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*kept elements have score 0.*")
        for i, make in enumerate(makers, 1):
            case = make()
            log(f"case {i}/{len(makers)}: {case.name}")
            res = run_case(case, cfg, log)
            results["clustering"].append(res.clustering)
            results["fits"] += res.fits
            results["pairs"] += res.pairs
    found = verdicts(results)
    seconds = time.perf_counter() - start
    path = write_markdown(results, found, out, header(cfg, argv, seconds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))
    for v in found:
        log(f"claim {v.claim}: {v.status} — {v.summary}")
    log(f"wrote {path} ({seconds / 60:.1f} min)")
    return {"results": results, "verdicts": found, "out": out, "seconds": seconds}


if __name__ == "__main__":
    main()
