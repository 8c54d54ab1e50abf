"""Benchmark: scanning whole layers in one pass (``pp.scan``) against baselines in the same run.

1. **Scan vs a loop of top_activating.** All 256 channels of AlexNet ``features.10`` (random
   init) over N generated 224×224 images. The loop is timed on a few channels and scaled to
   256; the ratio per channel should be ≥ 50×. The scan's wall time against one
   ``top_activating`` call plus the scan's clustering time: ≤ 1.3×.
2. **Memory.** Peak resident memory of a scan (k=100) of 1,000 and of 20,000 images, each in a
   fresh process: growth < 100 MB (the running top-k keeps O(C·k), never the data).
3. **Processes.** The same scan's recording pass under ``torchrun`` with 2 processes (1 thread
   each) vs 1 process (1 thread): speed-up ≥ 1.6× on a 2-core machine, identical results (the
   shards are whole batches, so every batch holds the same images in both runs).
4. **Ranks.** The planted polysemantic unit's rank among its layer's channels (several seeds),
   and the trained zoo models' known units' ranks (goal: first, and top 3).

Run: ``python benchmarks/scan.py`` or ``python -m benchmarks.scan`` (``--quick``: seconds, tiny
sizes, AlexNet ``features.0``, the 2-process run replaced by one in-process child). Timings on a
shared machine vary with its load: every ratio is measured against a baseline in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision

import polyprune as pp
from polyprune import zoo

LAYER = "features.10"
SCRIPT = Path(__file__).resolve()


def _images(n: int, batch: int, size: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Deterministic generated images, made batch by batch (never all in memory)."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        yield torch.rand(min(batch, n - start), 3, size, size, generator=gen)


class _Generated(torch.utils.data.Dataset[torch.Tensor]):
    """The same images as a map-style Dataset (item i made on demand), so ranks shard it."""

    def __init__(self, n: int, size: int, batch: int) -> None:
        self.n, self.size, self.batch = n, size, batch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1_000_003 * i + 7)
        return torch.rand(3, self.size, self.size, generator=gen)


def _alexnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model: torch.nn.Module = torchvision.models.alexnet().eval()
    return model


def speed(n: int, k: int, size: int, loop_channels: int, layer: str) -> dict[str, float]:
    model = _alexnet()
    t = time.perf_counter()
    result = pp.scan(model, layer, _images(n, 64, size), k=k, progress=False)
    channels = len(result)
    scan_wall = time.perf_counter() - t
    one = []
    for c in range(loop_channels):
        t = time.perf_counter()
        top = pp.top_activating(model, pp.Unit(layer, c), _images(n, 64, size), k, progress=False)
        one.append(time.perf_counter() - t)
        assert torch.equal(top.indices, result.top(c).indices)  # same batches: bit for bit
    per_call = sorted(one)[len(one) // 2]
    clustering = result.timings["clustering"]
    loop = per_call * channels
    print(f"scan of all {channels} channels of alexnet {layer}, {n} images {size}×{size}, k={k}")
    print(f"  scan: {scan_wall:.2f} s (pass {result.timings['pass']:.2f} s + clustering "
          f"{clustering:.2f} s)")  # fmt: skip
    print(f"  top_activating: {per_call:.2f} s per channel (median of {loop_channels}); loop over "
          f"{channels} channels ≈ {loop:.0f} s")  # fmt: skip
    per_channel = loop / scan_wall
    versus = scan_wall / (per_call + clustering)
    print(f"  speed-up per channel (loop / scan): {per_channel:.0f}×   (goal ≥ 50×)")
    print(f"  scan / (one top_activating + clustering): {versus:.2f}   (goal ≤ 1.3)")
    return {"per_channel": per_channel, "versus_one": versus}


def _peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def _memory_child(n: int, size: int, layer: str) -> None:
    torch.set_num_threads(1)
    result = pp.scan(_alexnet(), layer, _images(n, 50, size), k=100, progress=False)
    print(json.dumps({"n": n, "rss_mb": _peak_rss_mb(), "channels": len(result)}))


def memory(sizes: tuple[int, int], size: int, layer: str) -> float:
    cmds = [[sys.executable, str(SCRIPT), "--memory-child", str(n), "--size", str(size),
             "--layer", layer] for n in sizes]  # fmt: skip
    children = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    peaks = []
    for child in children:  # both at once: each measures only its own peak
        line, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"memory child failed ({child.returncode})")
        peaks.append(json.loads(line.strip().splitlines()[-1])["rss_mb"])
    print(f"scan(k=100) peak RSS, alexnet {layer}, {size}×{size}:")
    for n, mb in zip(sizes, peaks, strict=True):
        print(f"  {n:6d} images: {mb:8.1f} MB")
    growth = float(peaks[1] - peaks[0])
    print(f"  growth {sizes[0]} → {sizes[1]}: {growth:+.1f} MB   (goal < 100 MB)")
    return growth


def _dist_child(n: int, size: int, k: int, out: str) -> None:
    """One rank (or the only process): scan a shardable Dataset, write timings and a digest."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched:
        dist.init_process_group("gloo")
    try:
        result = pp.scan(_alexnet(), LAYER, _Generated(n, size, 64), k=k, progress=False)
        digest = hashlib.sha256()
        for unit in sorted(result.ranked(), key=lambda u: u.channel):
            top = result.top(unit)
            for t in (top.indices, top.values, top.codes):
                digest.update(t.contiguous().numpy().tobytes())
        if not launched or dist.get_rank() == 0:
            info = {"pass": result.timings["pass"], "digest": digest.hexdigest()}
            Path(out).write_text(json.dumps(info))
    finally:
        if launched:
            dist.destroy_process_group()


def processes(n: int, size: int, k: int, quick: bool) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        args = ["--dist-child", str(n), "--size", str(size), "--k", str(k)]
        runs = {}
        for procs in (1,) if quick else (1, 2):
            out = str(Path(tmp) / f"{procs}.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(procs), str(SCRIPT), *args, "--out", out]  # fmt: skip
            if quick:  # no launcher: the same child, in this process
                _dist_child(n, size, k, out)
            else:
                subprocess.run(cmd, check=True, env=env, capture_output=True)
            runs[procs] = json.loads(Path(out).read_text())
    if quick:
        print(f"recording pass, 1 process: {runs[1]['pass']:.2f} s (2 processes: not in --quick)")
        return None
    ratio = float(runs[1]["pass"] / runs[2]["pass"])
    same = runs[1]["digest"] == runs[2]["digest"]
    print(f"recording pass of {n} images, alexnet {LAYER} (gloo, 1 thread per process):")
    print(f"  1 process: {runs[1]['pass']:.2f} s; 2 processes: {runs[2]['pass']:.2f} s")
    print(f"  speed-up: {ratio:.2f}×   (goal ≥ 1.6×); results identical: {same}")
    return ratio


def ranks(seeds: int, images: int, k: int, trained: bool = True) -> dict[str, int]:
    found = {}
    for seed in range(seeds):
        model, _ = zoo.planted_network(seed=seed)
        x, _ = zoo.concept_images(images, size=zoo.PLANTED_SIZE, seed=1)
        result = pp.scan(model, zoo.PLANTED_TARGET[0], x, k=k, progress=False)
        found[f"planted seed {seed}"] = _rank(result, zoo.PLANTED_TARGET)
    for name in zoo.available() if trained else ():
        unit = zoo.model_card(name).unit
        x, _ = zoo.demo_data(name)
        result = pp.scan(zoo.load(name), unit[0], x, k=100, progress=False)
        found[name] = _rank(result, unit)
    print("rank of the known polysemantic unit among its layer's channels (goal: planted 1, "
          "trained ≤ 3):")  # fmt: skip
    for what, rank in found.items():
        print(f"  {what:<18} {rank}")
    return found


def _rank(result: pp.results.Scan, unit: tuple[str, int]) -> int:
    return 1 + [(u.layer, u.channel) for u in result.ranked()].index(unit)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--images", type=int, default=2048, help="images of the speed runs")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dist-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--layer", default=LAYER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        _memory_child(args.memory_child, args.size, args.layer)
        return {}
    if args.dist_child is not None:
        _dist_child(args.dist_child, args.size, args.k, args.out)
        return {}
    torch.set_num_threads(1)
    if args.quick:
        return {
            "speed": speed(48, 12, 67, 1, "features.0"),
            "memory": memory((120, 360), 67, "features.0"),
            "processes": processes(64, 67, 12, quick=True),
            "ranks": ranks(1, 600, 120, trained=False),
        }
    return {
        "speed": speed(args.images, 200, 224, 3, LAYER),
        "memory": memory((1000, 20000), 224, LAYER),
        "processes": processes(1024, 224, 200, quick=False),
        "ranks": ranks(5, 1500, 300),
    }


if __name__ == "__main__":
    main()
