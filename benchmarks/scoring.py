"""Benchmark the scorers on random-init AlexNet up to ``features.10`` (paper 3.2).

Prints, for each scorer and granularity, its time relative to one dense forward+backward
(forward to ``features.10``, gradient of the unit w.r.t. every parameter) measured in the same
run; FORCE(rounds)/SNIP per granularity (goal ≤ rounds + 1); and the peak resident memory of
kernel-level ActGrad (goal < 2 GB) and of a dense forward+backward, measured in a fresh
subprocess from the kernel's high-water mark of resident memory (``VmHWM``, reset between the
two; it sees torch's CPU allocations, and unlike ``ru_maxrss`` not the parent's).

Usage::

    python benchmarks/scoring.py            # 64 crops of 163×163 (the unit's receptive field)
    python benchmarks/scoring.py --quick    # seconds: 2 crops of 67×67, FORCE(2), 1 thread
    python -m benchmarks.scoring --quick    # the same, as a module
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision

from polyprune import Masks, Unit
from polyprune.results import Scores
from polyprune.scoring import FORCE, SNIP, ActGrad, Magnitude, Random, Scorer

ROOT = Path(__file__).resolve().parents[1]

LAYER = "features.10"
GRANULARITIES = ("filter", "kernel", "weight")


def setup(crop: int, batch: int) -> tuple[torch.nn.Module, torch.Tensor, Unit]:
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    return model, torch.rand(batch, 3, crop, crop), Unit(LAYER, 7)


def dense(model: torch.nn.Module, x: torch.Tensor, unit: Unit) -> None:
    """One forward to the unit's layer and the gradient w.r.t. every parameter before it."""
    features = model.get_submodule("features")
    assert isinstance(features, torch.nn.Sequential)
    params = [p for p in features.parameters()]
    out = features[:11](x)  # features.10: a plain forward, no hooks
    f = out[:, unit.channel, (out.shape[2] - 1) // 2, (out.shape[3] - 1) // 2].sum()
    torch.autograd.grad(f, params, allow_unused=True)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """The median wall time of ``repeat`` calls (the machine may be shared: the median is
    less biased than the best against a single long run such as FORCE's), and the last result."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _status(field: str) -> int:
    """A memory field of /proc/self/status in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_since_reset() -> int:
    """VmHWM: the peak RSS of this process image. Unlike ``ru_maxrss`` it does not inherit
    the parent's peak through fork+exec, and writing 5 to clear_refs resets it."""
    return _status("VmHWM")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(crop: int, batch: int, chunk_mb: int) -> None:
    """Print peak RSS figures (bytes, JSON) of this fresh process: after setup (torch, model,
    inputs), then the peak during kernel-level ActGrad and during a dense forward+backward,
    each measured from a reset of the high-water mark."""
    model, x, unit = setup(crop, batch)
    peaks = {"setup": _peak_since_reset()}
    _reset_peak()
    ActGrad(chunk_bytes=chunk_mb * 2**20, progress=False).score(model, x, unit)
    peaks["actgrad"] = _peak_since_reset()
    _reset_peak()
    dense(model, x, unit)
    peaks["dense"] = _peak_since_reset()
    print(json.dumps(peaks))


def peak_memory(crop: int, batch: int, chunk_mb: int) -> dict[str, int]:
    """Peak RSS of a fresh process (see :func:`child`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", "--crop", str(crop), "--batch", str(batch),
           "--chunk-mb", str(chunk_mb), "--threads", str(torch.get_num_threads())]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"the memory probe failed:\n{done.stderr}")
    peaks: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return peaks


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes; runs in seconds")
    parser.add_argument("--crop", type=int, default=None, help="crop size (default 163)")
    parser.add_argument("--batch", type=int, default=None, help="crops per batch (default 64)")
    parser.add_argument("--rounds", type=int, default=None, help="FORCE rounds (default 10)")
    parser.add_argument("--keep", type=float, default=0.05, help="FORCE target kept fraction")
    parser.add_argument("--repeat", type=int, default=None, help="median of n timings")
    parser.add_argument("--chunk-mb", type=int, default=64, help="ActGrad kernel chunk (MiB)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (quick: 1)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads or (1 if args.quick else before))
    try:
        return _run(args)
    finally:
        torch.set_num_threads(before)


def _run(args: argparse.Namespace) -> dict[str, float]:
    crop = args.crop or (67 if args.quick else 163)
    batch = args.batch or (2 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 10)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.child:
        child(crop, batch, args.chunk_mb)
        return {}

    model, x, unit = setup(crop, batch)
    print(f"AlexNet (random init) up to {LAYER}, unit {unit}, {batch} crops of {crop}×{crop}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    dense(model, x, unit)  # warm-up
    base, _ = timed(lambda: dense(model, x, unit), repeat)
    print(f"dense forward+backward: {base:.3f} s\n")
    scorers: list[Scorer] = [
        ActGrad(chunk_bytes=args.chunk_mb * 2**20, progress=False), SNIP(progress=False),
        FORCE(rounds, keep=args.keep, progress=False), Magnitude(), Random(seed=0),
    ]  # fmt: skip
    results: dict[str, float] = {"dense_s": base}
    force_kernel: object = None
    print(f"{'scorer':<12}{'granularity':<13}{'seconds':>9}{'× dense':>10}")
    for scorer in scorers:
        name = type(scorer).__name__ + (f"({rounds})" if isinstance(scorer, FORCE) else "")
        for gran in GRANULARITIES:
            once = 1 if isinstance(scorer, FORCE) else repeat
            seconds, scores = timed(partial(scorer.score, model, x, unit, granularity=gran), once)
            if isinstance(scorer, FORCE) and gran == "kernel":
                force_kernel = scores  # its kept fraction is printed below
            results[f"{name}/{gran}"] = seconds / base
            print(f"{name:<12}{gran:<13}{seconds:>9.3f}{seconds / base:>10.2f}")
    print()
    for gran in GRANULARITIES:
        ratio = results[f"FORCE({rounds})/{gran}"] / results[f"SNIP/{gran}"]
        results[f"FORCE/SNIP/{gran}"] = ratio
        print(f"FORCE({rounds})/SNIP at {gran}: {ratio:.2f}  (goal ≤ {rounds + 1})")
    assert isinstance(force_kernel, Scores)
    print(f"FORCE kernel masks at keep={args.keep}: kept fraction "
          f"{Masks.from_scores(force_kernel, args.keep).kept_fraction():.4f}")  # fmt: skip
    peaks = peak_memory(crop, batch, args.chunk_mb)
    results.update({f"peak_{k}_bytes": v for k, v in peaks.items()})
    gib = {k: v / 2**30 for k, v in peaks.items()}
    print(
        f"\npeak RSS of a fresh process: {gib['setup']:.2f} GiB after setup (torch, model, inputs)"
    )
    print(
        f"  {gib['actgrad']:.2f} GiB during kernel-level ActGrad "
        f"(+{gib['actgrad'] - gib['setup']:.2f}; chunks of {args.chunk_mb} MiB; goal < 2 GB)"
    )
    print(f"  {gib['dense']:.2f} GiB during a dense forward+backward "
          f"(+{gib['dense'] - gib['setup']:.2f})")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
