"""Overhead of ContinuousSparsifier, and seconds per CS epoch.

Forward + backward of random-init AlexNet up to ``features.10`` (loss: one unit's center
activation) on a batch of 163×163 crops, with the sparsifier attached versus the plain model, in
the same run: repetitions are interleaved in pairs (the order alternating inside each pair), and
the median of the per-pair ratios is reported, which cancels slow drifts in the machine's load.
Goals: ratio ≤ 1.05 at kernel granularity, ≤ 1.10 at weight granularity.

Then one ``fit_subnetwork`` epoch on 2,000 crops (batch 32), in seconds.

Usage::

    python benchmarks/sparsify.py            # full: batch 32, 2,000 crops
    python benchmarks/sparsify.py --quick    # seconds, tiny sizes (smoke test)
    python -m benchmarks.sparsify --quick    # the same, as a module
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

import polyprune as pp
from polyprune.sparsify import ContinuousSparsifier, CSConfig
from polyprune.subnetwork import fit_subnetwork

LAYER, CHANNEL = "features.10", 255


def _features(model: nn.Module) -> nn.Sequential:
    features = model.get_submodule("features")
    assert isinstance(features, nn.Sequential)
    return features


def _weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` as the forward sees it (masked while the sparsifier is attached)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def _step(model: nn.Module, x: torch.Tensor, position: tuple[int, int]) -> None:
    out = _features(model)[:11](x)  # features.10, the unit's layer
    out[:, CHANNEL, position[0], position[1]].sum().backward()


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # kernels run asynchronously: time their end, not their launch
    return time.perf_counter() - t


def overhead(
    model: nn.Module, x: torch.Tensor, granularity: str, reps: int
) -> tuple[float, float, float, float]:
    """Median seconds (plain, masked), median per-pair ratio masked / plain, mask-only seconds.

    The masked model is a copy of ``model`` (same weights) with the sparsifier attached for the
    whole measurement; the plain model computes its weights' gradients, the masked one its
    logits' gradients (its weights are frozen), as in training. The last value times the mask
    arithmetic alone (every masked weight computed once, and its backward to the logits): the
    overhead the ratio measures, without the convolutions' noise.
    """
    pos = pp.ReceptiveField.of(model, LAYER, (x.shape[-2], x.shape[-1])).center
    twin = copy.deepcopy(model)
    plain: list[float] = []
    masked: list[float] = []
    with ContinuousSparsifier(twin, up_to=pp.Unit(LAYER, CHANNEL), granularity=granularity) as cs:
        logits = list(cs.parameters())

        def run_plain() -> None:
            model.zero_grad(set_to_none=True)
            _step(model, x, pos)

        def run_masked() -> None:
            for p in logits:
                p.grad = None
            _step(twin, x, pos)

        for i in range(reps + 1):  # the first pair warms up and is dropped
            if i % 2:  # alternate the order inside each pair
                tm, tp = _timed(run_masked), _timed(run_plain)
            else:
                tp, tm = _timed(run_plain), _timed(run_masked)
            if i:
                plain.append(tp)
                masked.append(tm)
        owners = [twin.get_submodule(n.rpartition(".")[0]) for n, _ in cs.named_parameters()]
        grads = [torch.randn(_weight(o).shape) for o in owners]

        def run_masks() -> None:
            for p in logits:
                p.grad = None
            torch.autograd.backward([_weight(o) for o in owners], grads)

        alone = statistics.median(_timed(run_masks) for _ in range(reps + 1))
    ratios = [m / p for p, m in zip(plain, masked, strict=True)]
    return statistics.median(plain), statistics.median(masked), statistics.median(ratios), alone


def epoch_seconds(model: nn.Module, n: int, size: int, batch_size: int) -> float:
    """Seconds of one CS epoch (median of two) of fit_subnetwork on ``n`` random crops."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    members = torch.arange(n) % 2 == 0
    sub = fit_subnetwork(
        model, pp.Unit(LAYER, CHANNEL), images, members,
        config=CSConfig(epochs=2, batch_size=batch_size), progress=False,
    )  # fmt: skip
    return statistics.median(sub.history["seconds"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--no-epoch", action="store_true", help="skip the seconds-per-epoch run")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, size = (2, 35) if args.quick else (32, 163)
    reps = args.reps or (1 if args.quick else 15)
    n_epoch = 4 if args.quick else 2000
    device = torch.device(
        args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    model.classifier = nn.Identity()  # never reached (the forward stops at features.10)
    model.to(device)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    print(
        f"AlexNet up to {LAYER}, batch {batch} of {size}×{size}, {reps} interleaved reps, {device}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'granularity':<12}{'plain s':>10}{'masked s':>10}{'ratio':>8}{'goal':>7}{'masks s':>10}"
    )
    results: dict[str, float] = {}
    for granularity, goal in (("kernel", 1.05), ("weight", 1.10)):
        p, m, r, alone = overhead(model, x, granularity, reps)
        results[granularity] = r
        print(f"{granularity:<12}{p:>10.4f}{m:>10.4f}{r:>8.3f}{goal:>7.2f}{alone:>10.4f}")
    if args.no_epoch:
        return results
    secs = epoch_seconds(model, n_epoch, size, batch)
    results["epoch_seconds"] = secs
    print(f"CS epoch on {n_epoch} crops of {size}×{size} (batch {batch}): "
          f"{secs:.2f} s")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
