"""Benchmark: the calibrated verdict of issue 22 (``clustering.significance``, BH over a scan).

1. **Planted networks** (the six settings of ``docs/faithfulness.md``, seeds 10–14; the test
   was tuned on seeds 0–4, ``--tuning`` reruns those): ``scan`` of ``features.6`` with the top
   300 of 1,500 images. Goals: the planted unit called polysemantic (BH q < 0.05) in ≥ 95 % of
   the networks; its monosemantic neighbours (distractor and read-out detectors) in ≤ 5 %.
   Also shown: the single-unit rule of ``study`` (p < 0.05, no correction).
2. **Calibration** on synthetic codes with no cluster structure: one Gaussian, one unimodal
   non-Gaussian cloud with one meaning's tail weight (a multivariate t whose ν is derived from
   the tails part, ``benchmarks.verdicts.matched``), one Gaussian whose leading axis has one
   meaning's PC-1 skewness (derived alike) and, as a stress test, a multivariate t with
   5 degrees of freedom (far heavier-tailed than one meaning), each a random rotation
   of a power-law spectrum (the j-th variance 1/j), C = 64 and 384 channels, k = 100 and 1,000
   rows with unrelated values (so the strongest half is a random half). Goal: false-positive
   rate at alpha 0.05 in 2–8 %. **Power**: two Gaussians whose means are 6 apart along a
   random direction (6 times the largest standard deviation), same sizes. Goal ≥ 95 %.
   ``--tuning`` draws other clouds than the report (``synthetic.TUNING_BASE``).
3. **Zoo models**: the trained models' known polysemantic units (model cards) still called.
4. **Cost**: AlexNet (random init) ``features.10``, 1,000 generated images, k = 100: the scan
   with the test against the same scan with the test switched off, one run each, in the same
   process; and the clustering (HDBSCAN and the test, all channels) as a share of the scan.
   Goal: ≤ 2×.
5. **Tails** (``benchmarks.verdicts.tails``): what one meaning looks like, the tail weight of the
   planted monosemantic detectors' codes on the tuning seeds against Gaussian and t clouds
   (the matched clouds' parameters are derived from it: the synthetic part runs it first, or
   takes it from ``--load``), and the heavy-tail candidates measured and rejected ("why the
   null stays one Gaussian").

Run ``python -m benchmarks.verdicts --write`` (tens of minutes on 2 shared cores) to put the
table into ``docs/verdicts.md``; ``--quick`` (tiny sizes; prints, never writes). The parts can
run in parallel processes: ``--parts synthetic --save a.json``, ``--parts planted zoo cost
--save b.json``, then ``--load a.json b.json --parts --write``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torchvision

import polyprune as pp
from polyprune import zoo
from polyprune.clustering import significance

from ..claims.config import PLANTED_PAIRS
from ..claims.faithful.config import SETTINGS, Setting
from .matched import derive
from .report import REPORT_SEEDS as REPORT_SEEDS
from .report import TUNING_SEEDS as TUNING_SEEDS
from .report import _tail_sizes
from .report import markdown as markdown
from .synthetic import ALPHA, KINDS, REPORT_BASE, SIZES, TUNING_BASE, cloud, rates
from .synthetic import _pct as _pct
from .tails import CHANNELS, tail_weight

DOC = Path(__file__).resolve().parents[2] / "docs" / "verdicts.md"


def planted(
    seeds: tuple[int, ...], images: int, k: int
) -> dict[str, tuple[int, int, int, int, int]]:
    """Per setting: (planted called, networks, monosemantic called by q, by p, channels)."""
    out = {}
    for s in (s for s in SETTINGS if not s.identifiable):  # its unit is another layer
        hit = nets = mono_q = mono_p = mono = 0
        for seed in seeds:
            model, _ = zoo.planted_network(_pair(s, seed), s.distractors, seed, cross=s.cross)
            x, _ = zoo.concept_images(images, size=zoo.PLANTED_SIZE, seed=1000 + seed)
            table = pp.scan(model, "features.6", x, k=k, progress=False).table()
            for r in table:
                if r["channel"] == zoo.PLANTED_TARGET[1]:
                    hit, nets = hit + r["polysemantic"], nets + 1
                else:
                    mono += 1
                    mono_q += r["polysemantic"]
                    mono_p += r["clusters"] >= 2 and not r["flags"] and r["p_value"] < ALPHA
        out[s.name] = (hit, nets, mono_q, mono_p, mono)
        print(f"  {s.name:<18} planted {hit}/{nets}, monosemantic q {mono_q}/{mono}, "
              f"p {mono_p}/{mono}", flush=True)  # fmt: skip
    return out


def _pair(s: Setting, seed: int) -> tuple[str, str]:
    return s.pair or PLANTED_PAIRS[seed % len(PLANTED_PAIRS)]


def trained() -> dict[str, tuple[bool, float]]:
    """Each zoo model's known unit: (called, q)."""
    out = {}
    for name in zoo.available():
        layer, channel = zoo.model_card(name).unit
        x, _ = zoo.demo_data(name)
        result = pp.scan(zoo.load(name), layer, x, k=100, progress=False)
        row = next(r for r in result.table() if r["channel"] == channel)
        out[name] = (bool(row["polysemantic"]), float(row["q_value"]))
        print(f"  {name:<18} called {row['polysemantic']}, q = {row['q_value']:.2g}", flush=True)
    return out


def _untested(x: np.ndarray, seed: int, *args: object) -> tuple[float, float, int]:
    return math.nan, math.nan, 0


def tested(method: str) -> AbstractContextManager[object]:
    """``cluster`` (so ``scan``) runs the test ``method`` of ``significance`` inside."""
    if method == "gaussian":
        return nullcontext()
    # the function cluster and significance call (patched by name, as cost() does)
    test = importlib.import_module("polyprune.clustering").sigclust
    return mock.patch("polyprune.clustering.sigclust", partial(test, method=method))


def cost(images: int, layer: str, k: int, method: str = "gaussian") -> dict[str, float]:
    """Scan seconds with and without the test, and the clustering's share of each."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, 224, 224, generator=gen)
    out = {}
    for label, patch in (("without", True), ("with", False)):
        with mock.patch("polyprune.clustering.sigclust", _untested) if patch else nullcontext():
            start = time.perf_counter()
            result = pp.scan(model, layer, x, k=k, progress=False)
            total = time.perf_counter() - start
        out[label] = total
        out[f"{label} clustering share"] = result.timings["clustering"] / total
        out[f"{label} polysemantic"] = sum(r["polysemantic"] for r in result.table())
        out[f"{label} candidates"] = sum(
            r["clusters"] >= 2 and not r["flags"] for r in result.table()
        )  # channels the test ran on (two or more clusters, not flagged)
        if label == "with":  # the worst case: every channel tested (the scan tests candidates)
            start = time.perf_counter()
            for c in range(len(result)):
                top = result.top(c)
                significance(top.codes, top.values, seed=c, method=method)
            out["every channel tested"] = time.perf_counter() - start
        print(f"  {label} the test: {total:.1f} s, clustering "
              f"{result.timings['clustering']:.1f} s ({out[f'{label} clustering share']:.0%}), "
              f"{out[f'{label} polysemantic']} polysemantic", flush=True)  # fmt: skip
    return out


PARTS = ("planted", "synthetic", "zoo", "cost", "tails")


def _matched(tails: dict[str, Any], quick: bool) -> dict[str, float]:
    """The matched cloud's ν, derived from the tails part (:func:`matched.derive`)."""
    found = derive(tails, (_tail_sizes(quick)[1] + 1) // 2, CHANNELS)
    print(f"one meaning's tail weight: t, ν = {found['nu']} (PC-1 kurtosis "
          f"{found['kurtosis']:.2f}; Mardia's gives ν = {found['nu_mardia']:.1f}); PC-1 "
          f"skewness: a = {found.get('a', '-')}")  # fmt: skip
    return found


def _run(
    part: str, quick: bool, seeds: tuple[int, ...], kinds: list[str], match: dict[str, float],
    method: str = "gaussian", only: list[str] | None = None,
) -> Any:  # fmt: skip
    with tested(method):
        return _part(part, quick, seeds, kinds, match, method, only)


def _only(
    sizes: list[tuple[str, int, int, int]], only: list[str] | None
) -> list[tuple[str, int, int, int]]:
    """The synthetic sizes named ``C/k`` (all datasets) or ``C/k/n`` (``n`` datasets)."""
    if not only:
        return sizes
    wanted = {tuple(map(int, name.split("/")[:2])): name.split("/")[2:] for name in only}
    return [
        (kind, c, k, int(wanted[c, k][0]) if wanted[c, k] and kind != "two" else n)
        for kind, c, k, n in sizes
        if (c, k) in wanted
    ]


def _part(
    part: str, quick: bool, seeds: tuple[int, ...], kinds: list[str], match: dict[str, float],
    method: str, only: list[str] | None,
) -> Any:  # fmt: skip
    if part == "planted":
        print(f"planted networks, seeds {seeds}:")
        return planted(seeds, *((600, 120) if quick else (1500, 300)))
    if part == "synthetic":
        print("synthetic codes (called at alpha 0.05):")
        sizes = [(kind, 64, 100, 20) for kind in KINDS] if quick else _only(SIZES, only)
        # the matched clouds are run and saved under their parameters
        named = {"matched": f"t{match['nu']}", "skewed": f"skew{match.get('a', 0.0)}"}
        base = TUNING_BASE if set(seeds) <= set(TUNING_SEEDS) else REPORT_BASE
        found = rates(
            [(named.get(kind, kind), c, k, n) for kind, c, k, n in sizes if kind in kinds],
            method, base,
        )  # fmt: skip
        return {"/".join(map(str, key)): value for key, value in found.items()}
    if part == "tails":
        print("tail weight of the planted detectors, tuning seeds:")
        tuning = TUNING_SEEDS[:1] if quick else TUNING_SEEDS
        return tail_weight(tuning, *_tail_sizes(quick), cloud, _pair)
    if part == "zoo":
        print("zoo models:")
        return {} if quick else trained()
    print("cost:")
    times = cost(60, "features.10", 20, method) if quick else cost(1000, "features.10", 100, method)
    print(f"  ratio with / without the test: {times['with'] / times['without']:.2f}×")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.verdicts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--tuning", action="store_true", help="planted seeds 0–4 instead")
    parser.add_argument("--write", action="store_true", help=f"write the table to {DOC}")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS),
                        help="run these parts only")  # fmt: skip
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="synthetic codes of these kinds only")  # fmt: skip
    parser.add_argument("--method", choices=("gaussian", "minp"), default="gaussian",
                        help="the test of significance (default: the library's)")  # fmt: skip
    parser.add_argument("--sizes", nargs="+", default=None, metavar="C/K[/N]",
                        help="synthetic sizes only (C channels, k rows, N datasets)")  # fmt: skip
    parser.add_argument("--save", type=Path, help="save the parts' results (JSON)")
    parser.add_argument("--load", type=Path, nargs="*", default=[],
                        help="results saved by --save (parts run in parallel)")  # fmt: skip
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # one BLAS thread: numpy's many threads per process slow small matrices down
        with threadpool_limits(1):
            return _main(args)
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace) -> int:
    seeds: tuple[int, ...] = TUNING_SEEDS if args.tuning else REPORT_SEEDS
    seeds = seeds[:1] if args.quick else seeds
    results: dict[str, Any] = {}
    match = {"nu": math.nan}
    for path in args.load:  # synthetic results of several runs are merged
        for part, found in json.loads(path.read_text()).items():
            results[part] = {**results.get(part, {}), **found} if part == "synthetic" else found
    # the tails part first: the matched clouds' parameters are derived from it
    for part in sorted(args.parts, key=lambda part: part != "tails"):
        if part == "synthetic" and {"matched", "skewed"} & set(args.kinds):
            if "tails" not in results:
                results["tails"] = _run("tails", args.quick, seeds, args.kinds, match)
            match = _matched(results["tails"], args.quick)
            if "skewed" in args.kinds and "a" not in match:
                raise SystemExit("the loaded tails part has no PC-1 skewness: run --parts tails")
        results[part] = _run(part, args.quick, seeds, args.kinds, match, args.method, args.sizes)
    if args.save:
        args.save.write_text(json.dumps(results))
    if any(part not in results for part in PARTS):
        return 0
    synthetic = {
        (kind, int(c), int(k)): tuple(v)
        for key, v in results["synthetic"].items()
        for kind, c, k in [key.split("/")]
    }
    command = "python -m benchmarks.verdicts" + (" --tuning" if args.tuning else "")
    text = markdown(
        seeds, {name: tuple(v) for name, v in results["planted"].items()}, synthetic,
        {name: tuple(v) for name, v in results["zoo"].items()}, results["cost"],
        command + " --write", results["tails"], _matched(results["tails"], args.quick),
    )  # fmt: skip
    if args.write and not args.quick:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    else:
        print(text)
    return 0
