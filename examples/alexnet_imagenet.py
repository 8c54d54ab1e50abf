"""The paper's AlexNet units, studied on ImageNet (or any ImageFolder).

The paper (Pandiarajan, Anand & Foster) reports polysemantic units in AlexNet's conv layers:
``features.10`` units 255 (dogs and stripes), 167 and 15, and ``features.8`` unit 25. This script
runs polyprune's study on each of them and writes one report per unit.

Usage, with ImageNet's validation set in ImageFolder layout::

    python examples/alexnet_imagenet.py --data /data/imagenet/val --weights alexnet.pth
    python examples/alexnet_imagenet.py --data /data/imagenet/val --torchvision-weights
    python examples/alexnet_imagenet.py ... --paper-settings   # the paper's CS schedule

``--weights`` takes a torchvision AlexNet state_dict (``torch.load(weights_only=True)``);
``--torchvision-weights`` asks torchvision for ``AlexNet_Weights.IMAGENET1K_V1`` (a download, where
downloads work). Without either, the weights are random (for testing the pipeline only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision
from torchvision.datasets import ImageFolder
from torchvision.models import AlexNet_Weights

import polyprune as pp

PAPER_UNITS = ("features.10:255", "features.10:167", "features.10:15", "features.8:25")


def load_alexnet(weights: Path | None, from_torchvision: bool) -> torch.nn.Module:
    """AlexNet with a state_dict file, torchvision's ImageNet weights, or random weights."""
    if weights is not None and from_torchvision:
        raise SystemExit("give either --weights or --torchvision-weights, not both")
    if from_torchvision:
        return torchvision.models.alexnet(weights=AlexNet_Weights.IMAGENET1K_V1).eval()
    model = torchvision.models.alexnet(weights=None)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def parse_unit(spec: str) -> pp.Unit:
    layer, _, channel = spec.partition(":")
    if not channel.isdigit():
        raise SystemExit(f"--units takes LAYER:CHANNEL, e.g. features.10:255; got {spec!r}")
    return pp.Unit(layer, int(channel))


def run(args: argparse.Namespace) -> dict[str, pp.results.StudyResult]:
    model = load_alexnet(args.weights, args.torchvision_weights)
    # ImageNet preprocessing (resize 256, center crop 224, normalize): code, no download
    data = ImageFolder(str(args.data), transform=AlexNet_Weights.IMAGENET1K_V1.transforms())
    cs = pp.CSConfig.paper() if args.paper_settings else pp.CSConfig()
    if args.epochs is not None:
        cs = cs.replace(epochs=args.epochs)
    results = {}
    for spec in args.units:
        unit = parse_unit(spec)
        result = pp.study(
            model, unit, data, k=args.k, methods=args.methods, keep=args.keep,
            config=cs, batch_size=args.batch_size, progress=not args.quiet,
            min_cluster_size=args.min_cluster_size, alpha=args.alpha,
        )  # fmt: skip
        report = result.save(args.out / f"{unit.layer}_{unit.channel}")
        print(result.summary(), f"\nreport: {report}\n", flush=True)
        results[spec] = result
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="ImageFolder (e.g. ImageNet val)")
    p.add_argument("--weights", type=Path, help="AlexNet state_dict file")
    p.add_argument("--torchvision-weights", action="store_true", help="IMAGENET1K_V1 (download)")
    p.add_argument("--units", nargs="+", default=list(PAPER_UNITS), help="LAYER:CHANNEL ...")
    p.add_argument("--k", type=int, default=1000, help="top crops per unit (paper: 1000)")
    p.add_argument("--methods", nargs="+", default=["cs", "actgrad", "snip", "force"])
    p.add_argument("--keep", type=float, default=0.05, help="kept fraction for the scorers")
    p.add_argument("--epochs", type=int, help="Continuous Sparsification epochs")
    p.add_argument("--paper-settings", action="store_true", help="the paper's CS schedule")
    p.add_argument("--min-cluster-size", type=int, help="HDBSCAN (default: 5 %% of k)")
    p.add_argument(
        "--alpha",
        type=float,
        default=pp.clustering.ALPHA,
        help="significance level of the polysemanticity test",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("alexnet-study"))
    p.add_argument("--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
