"""Running the cases, and the command line (``python -m benchmarks.claims.faithful``)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from polyprune.results import Subnetwork

from ..cases import Case, demo_case, planted_case
from ..config import DOCS, OBJECTIVES, as_tuples
from ..run import CaseResult, Runner, prepare
from .config import BY_NAME, MODELS, QUICK, FaithfulConfig, Rows
from .methods import (
    BACKGROUND_ARM,
    VARIANTS,
    IdentRow,
    background,
    complete,
    fit_timed,
    identifiability,
    kept_of,
    method_of,
)
from .report import render


def _arms(run: Runner, out: CaseResult, cfg: FaithfulConfig) -> list[IdentRow]:
    """The true circuits (planted), CS with each objective and every other method, one
    subnetwork per cluster, with ROC AUC and fit time; the identifiability rows."""
    run.record_truth(out)
    fitted: dict[str, dict[int, Subnetwork]] = {}
    for loss in cfg.objectives:
        config = cfg.cs_config(loss)
        subs, seconds = fit_timed(run, "cs", config=config)
        start = len(out.fits)
        run.record(out, "CS", "objective", config.penalty_weight, subs, loss)
        complete(run, out, start, subs, seconds)
        fitted[f"CS {loss}"] = subs
    for name in cfg.methods:  # scorers at the kept fraction of CS with the default objective
        reference = fitted.get("CS both")
        own = name == "ablation" or name in VARIANTS  # finds its own kept fraction
        keeps = None if own else kept_of(reference) if reference else None
        if name == BACKGROUND_ARM:  # CS both, background crops as more non-members
            subs, seconds = fit_timed(
                run, "cs", config=cfg.cs_config("both"), extra=background(run)
            )
        else:
            subs, seconds = fit_timed(run, method_of(name), keeps)
        start = len(out.fits)
        run.record(out, name, "method", 0.0, subs, "both")
        complete(run, out, start, subs, seconds)
        fitted[name] = subs
    return identifiability(run, fitted) if run.case.truth is not None else []


def run(cfg: FaithfulConfig, log: Callable[[str], None]) -> Rows:
    """Every case of ``cfg``: the planted settings, then the trained models."""
    rows = Rows(cfg)
    claims = cfg.claims_config()
    cases: list[tuple[str, Callable[[], Case]]] = [
        (
            s.name,
            partial(planted_case, seed, claims, s.pair, s.distractors, s.cross, s.identifiable),
        )
        for s in cfg.settings
        for seed in s.seeds
    ]
    cases += [
        (name, partial(demo_case, name, seed, claims))
        for name in cfg.models
        for seed in cfg.model_seeds
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*kept elements have score 0.*")
        for i, (family, make) in enumerate(cases, 1):
            t = time.perf_counter()
            case = replace(make(), family=family)
            log(f"case {i}/{len(cases)}: {family}, {case.name}")
            out, runner = prepare(case, claims, log)
            if runner is None:
                rows.skipped[case.name] = "not polysemantic (fewer than 2 clusters)"
                continue
            rows.identifiability += _arms(runner, out, cfg)
            rows.fits += out.fits
            log(f"{case.name}: {time.perf_counter() - t:.0f} s")
    return rows


def merge(parts: Sequence[dict[str, Any]]) -> tuple[Rows, float, list[str]]:
    """The rows of several ``--json`` files of one run split by setting (or model): every row,
    the settings in :data:`SETTINGS` order, the summed wall time, and the one command that
    gives the same rows (each case is seeded by itself, so a split run is the same run).

    Raises ``ValueError`` when the parts differ in anything but their settings and models.
    """
    rows = [Rows.from_dict(data) for data in parts]
    seconds = sum(float(data["seconds"]) for data in parts)
    if len(rows) == 1:
        return rows[0], seconds, list(parts[0]["argv"])
    rest = {replace(r.config, settings=(), models=()) for r in rows}
    if len(rest) > 1:
        raise ValueError("the parts to merge differ in more than their settings and models")
    settings = {s.name: s for r in rows for s in r.config.settings}
    order = [n for n in BY_NAME if n in settings] + [n for n in settings if n not in BY_NAME]
    models = tuple(dict.fromkeys(m for r in rows for m in r.config.models))
    config = replace(rows[0].config, settings=tuple(settings[n] for n in order), models=models)
    merged = Rows(config)
    for r in rows:
        merged.fits += r.fits
        merged.skipped |= r.skipped
        merged.identifiability += r.identifiability
    seeds = {s.seeds for s in config.settings}
    argv = ["--settings", *order, *(["--seeds", *map(str, *seeds)] if len(seeds) == 1 else [])]
    argv += ["--models", *models, "--objectives", *config.objectives]
    argv += [] if config.epochs is None else ["--epochs", str(config.epochs)]
    argv += ["--cs", *(f"{k}={json.dumps(v)}" for k, v in config.cs)] if config.cs else []
    return merged, seconds, argv


# ---------------------------------------------------------------------------------------------
# The command line


@dataclass(frozen=True)
class Outcome:
    """What :func:`main` did: the rows, the report's text and path, the wall time."""

    rows: Rows
    text: str
    out: Path
    seconds: float


def _change(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--cs``: the value as JSON (``0.05``, ``[1, 100]``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a CSConfig field), got {text!r}")
    try:
        return key, as_tuples(json.loads(value))
    except json.JSONDecodeError:
        return key, value


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, FaithfulConfig]:
    """Command-line arguments and the configuration they select."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.claims.faithful",
        description="Issue 15's table: CS objectives on untuned planted settings and zoo models.",
    )
    parser.add_argument("--quick", action="store_true", help="one setting and seed, 3 epochs")
    parser.add_argument("--out", type=Path, help="the Markdown file to write")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    parser.add_argument(
        "--report", type=Path, nargs="+",
        help="render the rows of this JSON (or merge several, one per part), run nothing",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--settings", nargs="*", choices=sorted(BY_NAME), help="planted settings (none: none)"
    )
    parser.add_argument("--models", nargs="*", choices=MODELS, help="zoo models (none: none)")
    parser.add_argument("--epochs", type=int, help="CS epochs (default: each objective's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="planted seeds of every setting")
    parser.add_argument("--objectives", nargs="+", choices=OBJECTIVES, help="CS objectives")
    parser.add_argument(
        "--methods", nargs="*", choices=(*FaithfulConfig().methods, BACKGROUND_ARM),
        help=f"the methods beside CS (default: all but {BACKGROUND_ARM!r}; none: CS only)",
    )  # fmt: skip
    parser.add_argument(
        "--cs", nargs="+", type=_change, metavar="KEY=VALUE",
        help="CSConfig changes for every CS fit, e.g. lam=0.05 epochs=80 (VALUE read as JSON)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FaithfulConfig()
    if args.settings is not None:
        cfg = replace(cfg, settings=tuple(BY_NAME[s] for s in args.settings))
    if args.models is not None:
        cfg = replace(cfg, models=tuple(args.models))
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.objectives is not None:
        cfg = replace(cfg, objectives=tuple(args.objectives))
    if args.methods is not None:
        cfg = replace(cfg, methods=tuple(args.methods))
    if args.cs is not None:
        cfg = replace(cfg, cs=tuple(args.cs))
        try:  # a bad key or value fails here, before any work
            cfg.cs_config("both")
        except (TypeError, ValueError) as e:
            parser.error(f"--cs: {e}")
    if args.seeds is not None:
        seeds = tuple(args.seeds)
        cfg = replace(cfg, settings=tuple(replace(s, seeds=seeds) for s in cfg.settings))
    return args, cfg


def main(argv: Sequence[str] | None = None) -> Outcome:
    """Run (or re-render) the table: write the Markdown file, print it, return what was found."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, cfg = parse(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def log(message: str) -> None:
        elapsed = time.perf_counter() - start
        print(f"[faithful {elapsed // 60:02.0f}:{elapsed % 60:04.1f}] {message}", flush=True)

    if args.report is not None:
        rows, seconds, argv = merge([json.loads(path.read_text()) for path in args.report])
    else:
        rows = run(cfg, log)
        seconds = time.perf_counter() - start
    default = DOCS / "faithfulness.md"
    out: Path = args.out or (
        default
        if rows.config == FaithfulConfig()
        else Path(tempfile.mkdtemp(prefix="faithful-")) / "faithfulness.md"
    )
    parts = len(args.report) if args.report else 1
    text = render(rows, argv, seconds, out.parent / "img" / "faithfulness_roc.png", parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {**rows.to_dict(), "seconds": seconds, "argv": argv}
        args.json.write_text(json.dumps(payload, indent=1, default=float))
    print(text, flush=True)
    log(f"wrote {out} ({seconds / 60:.1f} min)")
    return Outcome(rows, text, out, seconds)


if __name__ == "__main__":
    main()
