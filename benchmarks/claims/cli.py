"""The command line: ``python -m benchmarks.claims [--quick] [--out DIR] [--json FILE] ...``."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, cast

import torch

from .cases import cases
from .config import DOCS, OBJECTIVES, QUICK, Config, Objective
from .report import header, write_markdown
from .rows import Results
from .run import CaseResult, run_case
from .verdicts import Verdict, verdicts

#: Config fields given as lists on the command line (tuples in :class:`Config`).
_TUPLES = ("planted_seeds", "trained", "trained_seeds", "keeps", "lams")


@dataclass(frozen=True)
class Outcome:
    """What :func:`main` did: the rows, the verdicts, the output directory and the wall time."""

    results: Results
    verdicts: list[Verdict]
    out: Path
    seconds: float


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    """Command-line arguments and the configuration they select."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.claims",
        description="The paper's six claims, checked on ground truth; writes docs/results.md.",
    )
    parser.add_argument("--quick", action="store_true", help="one seed, keeps 50/10/5/1 %%")
    parser.add_argument("--out", type=Path, help="output directory (results.md, img/)")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cases run at once, one process each (default 1); the rows are the same, each "
        "case's seeds are its own",
    )
    parser.add_argument("--planted-seeds", type=int, nargs="*", help="planted variants")
    parser.add_argument("--trained", nargs="*", help="trained zoo models (none: no names)")
    parser.add_argument("--trained-seeds", type=int, nargs="*", help="seeds of trained cases")
    parser.add_argument("--keeps", type=float, nargs="+", help="scorer kept fractions")
    parser.add_argument("--lams", type=float, nargs="+", help="CS λ sweep")
    parser.add_argument("--cs-lam", type=float, help="the λ of 'CS at its own kept fraction'")
    parser.add_argument(
        "--objectives",
        nargs="*",
        metavar="LOSS=λ,λ",
        help="other CS objectives for circuit recovery, e.g. both=0.03,0.1,0.3 preserve=0.1 "
        "(none: no other objectives)",
    )
    parser.add_argument("--epochs", type=int, help="CS epochs")
    parser.add_argument("--planted-images", type=int, help="images searched per planted case")
    parser.add_argument("--planted-k", type=int, help="top-k of the planted unit")
    parser.add_argument("--trained-k", type=int, help="top-k of the trained units")
    parser.add_argument("--outside", type=int, help="images of other concepts per case")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    changes: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in fields(Config)
        if getattr(args, f.name, None) is not None
    }
    for key in _TUPLES:
        if key in changes:
            changes[key] = tuple(changes[key])
    if args.objectives is not None:
        try:
            changes["objectives"] = tuple(_objective(text) for text in args.objectives)
        except ValueError as e:
            parser.error(f"--objectives: {e}")
    cfg = replace(cfg, **changes)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive number of processes, got {args.jobs}")
    if cfg.cs_lam not in cfg.lams:
        parser.error(f"--cs-lam {cfg.cs_lam} must be one of --lams {cfg.lams}")
    return args, cfg


def _objective(text: str) -> tuple[Objective, tuple[float, ...]]:
    """``"both=0.03,0.1"`` → ``("both", (0.03, 0.1))``."""
    loss, _, lams = text.partition("=")
    if loss not in OBJECTIVES or loss == "separate":
        raise ValueError(f"{loss!r} is not one of {[o for o in OBJECTIVES if o != 'separate']}")
    values = tuple(float(v) for v in lams.split(",") if v)
    if not values:
        raise ValueError(f"{text!r} gives no λ (LOSS=λ,λ,...)")
    return cast(Objective, loss), values


def _logger(start: float) -> Callable[[str], None]:
    """Progress lines stamped with the time since ``start`` (``time.perf_counter`` is one clock
    for every process of the machine)."""

    def log(message: str) -> None:
        elapsed = time.perf_counter() - start
        print(f"[claims {elapsed // 60:02.0f}:{elapsed % 60:04.1f}] {message}", flush=True)

    return log


def _run_case(index: int, cfg: Config, start: float) -> CaseResult:
    """Case ``index`` of ``cases(cfg)``, built and run here (in a worker process with --jobs)."""
    log = _logger(start)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*kept elements have score 0.*")
        case = cases(cfg)[index]()
        log(f"case {index + 1}/{len(cases(cfg))}: {case.name}")
        return run_case(case, cfg, log)


def _collect(results: Results, done: Iterable[CaseResult]) -> None:
    """Add every case's rows to ``results``, in the order of the cases."""
    for res in done:
        results.clustering.append(res.clustering)
        results.fits += res.fits
        results.pairs += res.pairs


def main(argv: Sequence[str] | None = None) -> Outcome:
    """Run the benchmark: write ``results.md`` (and ``--json``) and return what was found."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = parse(argv)
    torch.set_num_threads(args.threads)
    out: Path = args.out or (DOCS if cfg == Config() else Path(tempfile.mkdtemp(prefix="claims-")))
    start = time.perf_counter()
    log = _logger(start)
    n = len(cases(cfg))
    log(f"{n} cases ({args.jobs} at once); output: {out}")
    results = Results(cfg)
    jobs = (range(n), [cfg] * n, [start] * n)
    if args.jobs == 1:
        _collect(results, map(_run_case, *jobs))
    else:  # fresh processes (spawn) inherit no state from this one: the same rows
        context = multiprocessing.get_context("spawn")
        init = (torch.set_num_threads, (args.threads,))
        with ProcessPoolExecutor(args.jobs, context, *init) as pool:
            _collect(results, pool.map(_run_case, *jobs))
    found = verdicts(results)
    seconds = time.perf_counter() - start
    path = write_markdown(results, found, out, header(cfg, argv, seconds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results.to_dict(), indent=1, default=float))
    for v in found:
        log(f"claim {v.claim}: {v.status} — {v.summary}")
    log(f"wrote {path} ({seconds / 60:.1f} min)")
    return Outcome(results, found, out, seconds)
