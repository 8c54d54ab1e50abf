"""Issue 15's table: circuit recovery and faithfulness of CS's objectives on planted networks
whose seeds and settings no choice was tuned on, and on the trained zoo models; with issue 23's
methods (``ablation``, ``attribution``), threshold-free recovery (kernel ROC AUC and curves),
the ``cross=0`` setting, the ``identifiable`` setting (``zoo.planted_network(identifiable=True)``:
gated, pruned detectors, so the true circuit is the only subnetwork that reproduces the unit),
the identifiability of each planted circuit and each setting's F1 gap split into the ground
truth's part and the method's (:mod:`~benchmarks.claims.faithful.recovery`,
:mod:`~benchmarks.claims.faithful.methods`).

The objectives of ``CSConfig(loss=...)`` (the paper's ``"separate"``, ``"preserve"``, ``"both"``)
were tuned on planted seeds 0–2 (default pairs, 2 distractors, cross scale 1). Here they are run
with their own defaults (``pp.CSConfig(loss=...)``: 50 epochs; λ 1, lr 5e-3 for ``separate``;
λ 0.1, lr 1e-3 for the others) on settings they never saw: seeds 10–14 of the default pairs,
of three other concept pairs, with 3 distractors and with cross kernels twice as strong. The
true circuit, evaluated as a subnetwork, is the reference row (F1 1 by definition; its r is the
ceiling the planted network allows). Then the same objectives on the trained zoo models
``concepts-merged`` and ``digits-merged`` (images as ``polyprune demo``, seeds 0–2).

Each case is built as the claims benchmark builds it (:mod:`benchmarks.claims.cases`) and runs
the same pipeline (:func:`benchmarks.claims.run.prepare`: ``pp.study(..., methods=())``, top-k
crops, HDBSCAN clusters, 20 % of each cluster held out; one subnetwork per cluster, members the
cluster and non-members the other clusters' crops). Its rows are
:class:`~benchmarks.claims.rows.FitRow` s (``family``: the setting or model).

Usage, from the repository root::

    python -m benchmarks.claims.faithful          # full run (~35 min, one core)
    python -m benchmarks.claims.faithful --quick  # one setting and seed, 3 epochs (seconds)
    python -m benchmarks.claims.faithful --out FILE --json ROWS.json
    python -m benchmarks.claims.faithful --report ROWS.json --out FILE   # re-render saved rows
    python -m benchmarks.claims.faithful --settings identifiable --json A.json   # one part ...
    python -m benchmarks.claims.faithful --report A.json B.json --out FILE  # ... parts merged
    python -m benchmarks.claims.faithful --seeds 10 11 --models   # fewer seeds, no zoo models
    python -m benchmarks.claims.faithful --methods 'both background'   # an arm not run by default
    python -m benchmarks.claims.faithful --cs lam=0.05 epochs=70   # CS with other settings
    python -m benchmarks.claims.faithful.tuning BASE.json A.json B.json  # issue 23's rule

The arm ``both background`` (:func:`~benchmarks.claims.faithful.methods.background`) fits CS with
``both`` whose non-members are the other clusters' crops and 150 random crops of images outside
the top-k (DESIGN's "non-top images as extra negatives"). It is not the pipeline's default:
``pp.study`` does not collect such crops.

The full default run writes ``docs/faithfulness.md`` unless ``--out`` says otherwise; the file
records the command, date, versions and wall time, and is never edited by hand.
"""

from __future__ import annotations

from .config import BY_NAME, MODELS, QUICK, SEEDS, SETTINGS, TUNING, FaithfulConfig, Rows, Setting
from .report import render
from .run import Outcome, main, parse, run

__all__ = [
    "BY_NAME",
    "MODELS",
    "QUICK",
    "SEEDS",
    "SETTINGS",
    "TUNING",
    "FaithfulConfig",
    "Outcome",
    "Rows",
    "Setting",
    "main",
    "parse",
    "render",
    "run",
]
