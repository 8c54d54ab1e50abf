"""Benchmark: recording center activations with exact crops + early stop vs the naive way.

1. Center activations of AlexNet ``features.6`` (random init) over N generated 224×224 images:
   polyprune (crop to the unit's receptive field, forward stops after the layer) against the
   naive baseline (full-size forward through the whole model with a hook, then index the
   center), measured in the same run. Prints the speed ratio and the largest difference.
2. Peak memory growth of ``top_activating`` from 1,000 to 10,000 images (each in a fresh
   subprocess, peak resident memory): it streams, so memory must not grow with the data set.

Run: ``python benchmarks/recording.py`` or ``python -m benchmarks.recording`` (``--quick`` for a
seconds-long smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision

import polyprune as pp

LAYER = "features.6"
ROOT = Path(__file__).resolve().parents[1]


def _images(n: int, batch: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Deterministic generated images, made batch by batch (never all in memory)."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        yield torch.rand(min(batch, n - start), 3, 224, 224, generator=gen)


def device_of(name: str) -> torch.device:
    """``auto``: CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _naive_batch(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out: list[torch.Tensor] = []
    module = model.get_submodule(LAYER)
    # clone: a view would be rewritten by the in-place ReLU after the layer
    handle = module.register_forward_hook(lambda m, a, o: out.append(o[:, :, 6, 6].clone().cpu()))
    try:
        with torch.no_grad():
            model(x.to(next(model.parameters()).device))
    finally:
        handle.remove()
    return out[0]


def _polyprune_batch(
    model: torch.nn.Module, rf: pp.ReceptiveField, x: torch.Tensor
) -> torch.Tensor:
    crop = rf.crop(x)
    rec = pp.ActivationRecorder(model, LAYER, "center", position=crop.unit)
    with torch.no_grad():
        return rec.run(crop.images)[LAYER].cpu()  # images move to the model's device


def speed(n: int, batch: int, device: torch.device | None = None) -> None:
    """Per batch: the naive way, then polyprune, on the same fresh images (paired, so load
    changes on a shared machine hit both); report total times and the median paired ratio.
    Images are made on the CPU and moved to ``device`` by each side (as a loader's would be)."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval().to(device or torch.device("cpu"))
    rf = pp.ReceptiveField.of(model, LAYER, (224, 224))
    warm = next(_images(batch, batch, seed=1))
    _naive_batch(model, warm), _polyprune_batch(model, rf, warm)
    naive = ours = 0.0
    ratios, diff = [], 0.0
    for x in _images(n, batch):
        t = time.perf_counter()
        ref = _naive_batch(model, x)
        a = time.perf_counter() - t
        t = time.perf_counter()
        got = _polyprune_batch(model, rf, x)
        b = time.perf_counter() - t
        naive, ours = naive + a, ours + b
        ratios.append(a / b)
        diff = max(diff, float((got - ref).abs().max() / ref.abs().max()))
    median = sorted(ratios)[len(ratios) // 2]
    print(f"center activations of alexnet {LAYER}, {n} images 224×224, batch {batch}, {device}")
    print(f"  naive (full forward + hook): {naive:8.2f} s  ({n / naive:7.1f} img/s)")
    print(f"  polyprune (crop + stop)    : {ours:8.2f} s  ({n / ours:7.1f} img/s)")
    print(f"  speed-up (median of {len(ratios)} paired batches): {median:.2f}×   (goal ≥ 5×)")
    print(f"  max relative difference    : {diff:.2e}  (identical values up to float rounding)")


def _child(n: int, layer: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    data = _images(n, 50)
    top = pp.top_activating(model, pp.Unit(layer, 0), data, k=100, progress=False)
    print(json.dumps({"n": n, "rss_mb": _peak_rss_mb(), "k": len(top)}))


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def memory(sizes: tuple[int, int], layer: str) -> list[float]:
    peaks = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--layer", layer]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's polyprune, as the parent
        line = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        peaks.append(json.loads(line.strip().splitlines()[-1])["rss_mb"])
    print(f"top_activating(k=100) peak RSS, alexnet {layer}:")
    for n, mb in zip(sizes, peaks, strict=True):
        print(f"  {n:6d} images: {mb:8.1f} MB")
    print(f"  growth {sizes[0]} → {sizes[1]}: {peaks[1] - peaks[0]:+.1f} MB   (goal < 50 MB)")
    return peaks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layer", default=LAYER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.layer)
        return
    device = device_of(args.device)
    if args.quick:
        speed(64, 32, device)
        memory((100, 300), "features.2")
    else:
        speed(args.images, 64, device)
        memory((1000, 10000), LAYER)


if __name__ == "__main__":
    main()
