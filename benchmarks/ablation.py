"""Benchmark the ``ablation`` method's fit time against the default CS fit's, in the same run.

Issue 23's goal: ablation (ACDC-style, :class:`polyprune.ablation.Ablation` with its defaults) on
random-weight AlexNet's ``features.10`` (one unit, 300 crops of its receptive field) within 10×
the time of the default Continuous Sparsification fit (``fit_subnetwork``'s default ``"cs"``,
``CSConfig()``), and on the planted network (its unit, 300 top crops) within 3×. Prints each
fit's seconds, kept fraction and the ratio ablation / CS.

Members: on AlexNet (random weights, random crops) the crops where the unit is above its median;
on the planted network the top-300 crops of the unit's first planted concept.

Usage::

    python benchmarks/ablation.py                        # the goal's sizes (slow on a CPU)
    python benchmarks/ablation.py --crops 32 --crop 67   # a smaller AlexNet setting
    python benchmarks/ablation.py --quick     # seconds: tiny sizes, CS 2 epochs, features.3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torchvision

import polyprune as pp
from polyprune import zoo

CHANNEL = 7
Case = tuple[torch.nn.Module, pp.Unit, torch.Tensor, torch.Tensor]  # model, unit, crops, members


def alexnet_case(crops: int, crop: int, layer: str) -> Case:
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    images = torch.rand(crops, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    unit = pp.Unit(layer, CHANNEL)
    a = unit.activations(model, images)
    return model, unit, images, a > a.median()


def planted_case(crops: int, pool: int = 1500) -> Case:
    model, _ = zoo.planted_network()
    images, labels = zoo.concept_images(pool, size=zoo.PLANTED_SIZE, seed=1)
    unit = pp.Unit(*zoo.PLANTED_TARGET)
    top = pp.top_activating(model, unit, images, k=crops, progress=False)
    x = images[top.indices] if top.inputs is None else top.inputs
    concepts = labels[top.indices]
    return model, top.input_unit or unit, x, concepts == concepts[0]


def timed(fit: Callable[[], pp.methods.Subnetwork]) -> tuple[float, pp.methods.Subnetwork]:
    start = time.perf_counter()
    sub = fit()
    return time.perf_counter() - start, sub


def compare(name: str, case: Case, cs: pp.CSConfig, goal: float) -> dict[str, float]:
    """Fit CS and ablation on one case; print and return the seconds and their ratio."""
    model, unit, x, members = case
    cs_s, cs_sub = timed(lambda: pp.fit_subnetwork(model, unit, x, members, config=cs,
                                                   progress=False))  # fmt: skip
    ab_s, ab_sub = timed(lambda: pp.fit_subnetwork(model, unit, x, members, "ablation",
                                                   progress=False))  # fmt: skip
    ratio = ab_s / cs_s
    evaluations = ab_sub.history["evaluations"][-1]
    cs_loss, ab_loss, dense, empty = (
        objective(model, unit, x, members, m)
        for m in (cs_sub.masks, ab_sub.masks, _filled(cs_sub.masks, True),
                  _filled(cs_sub.masks, False))
    )  # fmt: skip
    print(
        f"{name}: {len(x)} crops {tuple(x.shape[2:])}; CS {cs_s:.1f} s (kept "
        f"{cs_sub.kept_fraction:.3f}, objective {cs_loss:.3f}), ablation {ab_s:.1f} s (kept "
        f"{ab_sub.kept_fraction:.3f}, objective {ab_loss:.3f}, {evaluations:.0f} evaluations): "
        f"ratio {ratio:.2f} (goal ≤ {goal:g}); objective of the dense network {dense:.3f}, of "
        f"none of the region's kernels {empty:.3f}",
        flush=True,
    )
    return {f"{name}_cs_s": cs_s, f"{name}_ablation_s": ab_s, f"{name}_ratio": ratio,
            f"{name}_cs_objective": cs_loss, f"{name}_ablation_objective": ab_loss}  # fmt: skip


def objective(
    model: torch.nn.Module, unit: pp.Unit, x: torch.Tensor, members: torch.Tensor, masks: pp.Masks
) -> float:
    """The default ``both`` objective of a subnetwork (hard masks, lower is better)."""
    return pp.ablation.removal_effects(model, unit, x, members, masks, effects=False)[0]


def _filled(masks: pp.Masks, keep: bool) -> pp.Masks:
    """``masks`` with every kernel of the region kept (the dense network) or none kept."""
    regions = {n: masks.regions.get(n, torch.ones_like(masks[n])) for n in masks}
    kept = {n: ~regions[n] | keep for n in masks}
    return pp.Masks(kept, "kernel", weight_shapes=masks.weight_shapes, regions=regions,
                    unit=masks.unit)  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="seconds: tiny sizes, CS 2 epochs, features.3"
    )
    parser.add_argument("--crops", type=int, default=None, help="AlexNet crops (default 300)")
    parser.add_argument("--crop", type=int, default=None, help="AlexNet crop size (default 163)")
    parser.add_argument("--planted-crops", type=int, default=None, help="default 300")
    parser.add_argument("--skip", choices=("alexnet", "planted"), help="leave one case out")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    crops = args.crops or (8 if args.quick else 300)
    crop = args.crop or (67 if args.quick else 163)
    planted = args.planted_crops or (40 if args.quick else 300)
    cs = pp.CSConfig(epochs=2) if args.quick else pp.CSConfig()
    out: dict[str, float] = {}
    if args.skip != "planted":
        out |= compare("planted", planted_case(planted, 200 if args.quick else 1500), cs, 3)
    if args.skip != "alexnet":
        layer = "features.3" if args.quick else "features.10"
        out |= compare("alexnet", alexnet_case(crops, crop, layer), cs, 10)
    return out


if __name__ == "__main__":
    main()
