"""What each scorer keeps on the hand-built network whose circuit is known exactly.

The network is :func:`polyprune.zoo.handbuilt`: three convolutions where the unit ``("4", 0)``
depends on 15 known kernels out of the 96 that can reach it; the other kernels are random with a
larger magnitude, so weight magnitude points away from the circuit. For every scorer and
``keep`` in 0.5, 0.1, 0.01 (kernel granularity, global scope) it prints the precision and recall
of the kept kernels against the known circuit (:func:`polyprune.evaluation.circuit_scores`).
Not a timing benchmark: it records what the closing note of the scorer issue reports, so the
figures can be reproduced.

Usage::

    python benchmarks/handbuilt.py      # or: python -m benchmarks.handbuilt
"""

from __future__ import annotations

import argparse
import warnings

import torch

import polyprune as pp
from polyprune import zoo

KEEPS = (0.5, 0.1, 0.01)


def _scorer(name: str, keep: float) -> pp.scoring.BaseScorer:
    options = {"rounds": 10} if name == "force" else {}  # FORCE's schedule ends at the keep
    if name in ("actgrad", "snip", "force"):
        options["progress"] = False
    return pp.scoring.create(name, keep=keep, **options)


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Print the table; return ``{"Scorer@keep": (precision, recall)}``."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)
    truth = zoo.handbuilt().truth
    known = truth.kept_weights() // 9  # 3×3 kernels
    print(f"hand-built network: {known} known kernels of {truth.total_weights() // 9} that reach "
          "the unit")  # fmt: skip
    print(f"{'scorer':<12}" + "".join(f"{'keep ' + str(k):>16}" for k in KEEPS))
    results: dict[str, tuple[float, float]] = {}
    for name in ("actgrad", "snip", "force", "magnitude", "random"):
        cells = []
        for keep in KEEPS:
            net = zoo.handbuilt()
            scorer = _scorer(name, keep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # ties at score 0 fill large keeps
                masks = scorer.cut(scorer.score(net.model, net.images, net.unit))
            found = pp.evaluation.circuit_scores(masks, net.truth)
            label = type(scorer).__name__
            results[f"{label}@{keep}"] = (found.precision, found.recall)
            cells.append(f"P {found.precision:.2f} R {found.recall:.2f}")
        print(f"{label:<12}" + "".join(f"{c:>16}" for c in cells))
    return results


if __name__ == "__main__":
    main()
