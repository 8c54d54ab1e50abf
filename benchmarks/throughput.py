"""Benchmark: top_activating on a folder of JPEGs, with 0, 1 and 2 DataLoader workers.

Writes N generated 224×224 JPEGs (``zoo.write_image_folder(..., image_format="jpeg")``), reads them
as a torchvision ``ImageFolder`` (decode + ``ToTensor`` + ImageNet normalization, as for ImageNet
val) and measures, in the same run:

- **decode only**: one pass of the DataLoader without the model (images/s);
- **model only**: ``top_activating`` over the same images already decoded, in memory;
- ``top_activating`` on the folder with each of ``--workers`` (default 0, 1 and 2) loader
  processes.

It prints images/s, the share of the ``workers=0`` pass that decoding takes, and whether, with
the best number of workers, the pass is bound by the model (no slower than the model alone, within
10 %) rather than by decoding. On a machine with few cores the workers compete with the model
for them: 2 workers on 2 cores can be slower than 1. The unit is AlexNet ``features.6`` (random
init).

Run: ``python benchmarks/throughput.py`` or ``python -m benchmarks.throughput`` (``--quick``: 140
images).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

import polyprune as pp
from polyprune import zoo

UNIT = pp.Unit("features.6", 0)
NORMALIZE = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _dataset(root: Path, per_concept: int) -> ImageFolder:
    zoo.write_image_folder(root, per_concept, size=224, seed=0, image_format="jpeg")
    return ImageFolder(str(root), transform=T.Compose([T.ToTensor(), NORMALIZE]))


def _seconds(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="140 images (a smoke run)")
    parser.add_argument("--per-concept", type=int, help="images per concept (7 concepts)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loaders")
    args = parser.parse_args(argv)
    per_concept = args.per_concept or (20 if args.quick else 286)  # 7 × 286 = 2002 images
    torch.set_num_threads(1)  # the main process; workers get one thread each as well
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    with tempfile.TemporaryDirectory() as tmp:
        data = _dataset(Path(tmp) / "jpegs", per_concept)
        n = len(data)
        k = min(100, n)
        loader = DataLoader(data, batch_size=args.batch, shuffle=False)
        decode = _seconds(lambda: [None for _ in loader])
        images = torch.cat([x for x, _ in loader])
        model_only = _seconds(
            lambda: pp.top_activating(model, UNIT, images, k, batch_size=args.batch, progress=False)
        )
        passes = {
            w: _seconds(
                lambda w=w: pp.top_activating(
                    model, UNIT, data, k, batch_size=args.batch, workers=w, progress=False
                )
            )
            for w in sorted({0, *args.workers})
        }
    seconds = {"decode": decode, "model": model_only, **{f"w{w}": s for w, s in passes.items()}}
    rate = {name: n / s for name, s in seconds.items()}
    print(
        f"{n} JPEGs of 224×224, AlexNet {UNIT.layer} crops, batch {args.batch}, "
        f"1 torch thread, {os.cpu_count()} CPU cores"
    )
    print(f"  decode only (DataLoader, 0 workers) : {rate['decode']:8.1f} img/s")
    print(f"  model only (images in memory)       : {rate['model']:8.1f} img/s")
    for w, s in passes.items():
        print(f"  top_activating, workers={w}           : {n / s:8.1f} img/s "
              f"({passes[0] / s:.2f}× workers=0)")  # fmt: skip
    share = decode / passes[0]
    print(f"  decoding share of the workers=0 pass: {share:8.0%}")
    best = min(passes, key=passes.__getitem__)
    bound = passes[best] <= 1.1 * model_only
    print(f"  best: workers={best}; the pass is bound by the model, not decoding: {bound}")
    return {
        "n": n, "decode_share": share, "best_workers": best,
        "speedup_best": passes[0] / passes[best], **rate,
    }  # fmt: skip


if __name__ == "__main__":
    main()
