"""Benchmark: ``polyprune demo`` — total time and the time of each stage of each study.

Every stage is also expressed as a multiple of one plain forward pass of the same model over the
same images (no hooks, no crops), measured in the same run, so the figures compare across
machines and loads.

Run: ``python benchmarks/demo.py [--out DIR]`` or ``python -m benchmarks.demo [--out DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import polyprune as pp
from polyprune import zoo


def _plain_forward(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for x in torch.split(images, batch):
            model(x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as `polyprune demo` runs
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(before)


def _main(argv: list[str] | None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="report directory (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="polyprune-demo-"))
    total = time.perf_counter()
    table: dict[str, dict[str, float]] = {}
    for case in zoo.demo_cases():
        baseline = _plain_forward(case.model, case.images)
        start = time.perf_counter()
        result = pp.study(case.model, case.unit, case.images, k=case.k, keep=case.keep,
                          config=case.cs, progress=False)  # fmt: skip
        result.save(out / case.name, overwrite=True)
        timings = dict(result.timings)
        timings["study total (with report)"] = time.perf_counter() - start
        table[case.name] = timings
        print(f"{case.name}: {len(case.images)} images; one plain forward over them: "
              f"{baseline:.2f} s")  # fmt: skip
        for stage, seconds in timings.items():
            print(f"  {stage:<28}{seconds:8.2f} s  {seconds / baseline:8.1f}× plain forward")
    print(f"demo total: {time.perf_counter() - total:.1f} s (goal < 60 s on 2 CPU cores)")
    return table


if __name__ == "__main__":
    main()
