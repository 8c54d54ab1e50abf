"""The paper's six claims, checked on ground truth; writes ``docs/results.md``.

Runs the paper's pipeline (``polyprune.study``: top-k receptive-field crops, HDBSCAN clusters,
held-out split) on several variants of the planted-superposition network (circuits known kernel
by kernel) and on the trained zoo models ``concepts-merged`` and ``digits-merged``; fits one
subnetwork per cluster with ActGrad, SNIP, FORCE, Magnitude and Random at several keeps and
with Continuous Sparsification over a λ sweep (the paper's objective, ``loss="separate"``),
then every scorer again at CS's own kept fraction; measures separation (AUROC, d′) on fitted and
held-out crops, behaviour on images of other concepts, circuit precision/recall/F1 against the
planted truth, cluster ARI against the true concepts and subnetwork overlap against
independence; and writes a verdict per claim with its evidence, tables (mean ± std over seeds)
and figures. A last section, circuit recovery, fits CS with the other objectives
(``loss="both"``, ``"preserve"``) beside the paper's and measures what every subnetwork
computes (kernel F1 against the planted circuit; Pearson r, relative error and activation kept
on held-out members), with the true circuit as a reference; the claims never read those rows.

Usage, from the repository root::

    python -m benchmarks.claims                  # full run (~20 min, 2 cores): docs/results.md
    python -m benchmarks.claims --quick          # one seed, fewer keeps (< 3 min): a temp dir
    python -m benchmarks.claims --quick --out DIR --json DIR/results.json
    python -m benchmarks.claims --jobs 4         # four cases at once, one process each: same rows

Only the full default configuration writes to ``docs/`` unless ``--out`` says otherwise; the
generated ``results.md`` records the command, date, versions, seeds and wall time, and is never
edited by hand.

The modules, in the order the data flows: :mod:`~benchmarks.claims.config` (what a run does),
:mod:`~benchmarks.claims.cases` (models, units, images, truth), :mod:`~benchmarks.claims.run`
(the experiment on one case), :mod:`~benchmarks.claims.rows` (its typed rows),
:mod:`~benchmarks.claims.stats` (selecting and averaging rows), :mod:`~benchmarks.claims.verdicts`
(one verdict per claim, registered in ``CLAIMS``), :mod:`~benchmarks.claims.tables` and
:mod:`~benchmarks.claims.figures` (building blocks of the report),
:mod:`~benchmarks.claims.report` (the report: a header and the sections registered in
``SECTIONS``), :mod:`~benchmarks.claims.cli` (the command line). Submodule names are not
re-used for the names exported here (``benchmarks.claims.verdicts`` is the module).
:mod:`~benchmarks.claims.faithful` is issue 15's table on untuned planted settings and the zoo
models, built from the same cases and runner (``python -m benchmarks.claims.faithful``).
"""

from __future__ import annotations

from .cli import Outcome, main, parse
from .config import QUICK, Config
from .rows import ClusteringRow, FitRow, PairRow, Results
from .verdicts import CLAIMS, Verdict

__all__ = [
    "CLAIMS",
    "QUICK",
    "ClusteringRow",
    "Config",
    "FitRow",
    "Outcome",
    "PairRow",
    "Results",
    "Verdict",
    "main",
    "parse",
]
