"""What each scorer keeps on the hand-built network whose circuit is known exactly.

The network is the one the scorer tests use (``handbuilt()`` in
``tests/test_scoring_contract.py``): three convolutions where the unit ``("4", 0)`` depends on 15
known kernels out of the 96 that can reach it; the other kernels are random with a larger
magnitude, so weight magnitude points away from the circuit. For every scorer and
``keep`` in 0.5, 0.1, 0.01 (kernel granularity, global scope) it prints the precision and recall
of the kept kernels against the known circuit. Not a timing benchmark: it records what the
closing note of the scorer issue reports, so the figures can be reproduced.

Usage::

    python benchmarks/handbuilt.py
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

from polyprune import Masks
from polyprune.scoring import FORCE, SNIP, ActGrad, Magnitude, Random, Scorer

ROOT = Path(__file__).resolve().parents[1]
KEEPS = (0.5, 0.1, 0.01)


def _contract() -> ModuleType:
    """The scorer tests' module, which owns the hand-built network (one definition, not two)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import load_script

    return load_script("tests/test_scoring_contract.py")


def precision_recall(kept: set[object], known: set[object]) -> tuple[float, float]:
    """Precision and recall of ``kept`` against ``known`` (precision 0 when nothing is kept)."""
    hits = len(kept & known)
    return (hits / len(kept) if kept else 0.0), hits / len(known)


def _scorer(name: str, keep: float) -> Scorer:
    if name == "FORCE":
        return FORCE(10, keep=keep, progress=False)  # its schedule ends at the target keep
    return {
        "ActGrad": ActGrad(progress=False),
        "SNIP": SNIP(progress=False),
        "Magnitude": Magnitude(),
        "Random": Random(seed=0),
    }[name]


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Print the table; return ``{"Scorer@keep": (precision, recall)}``."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)
    contract = _contract()
    known = contract.known_kernels()
    results: dict[str, tuple[float, float]] = {}
    net, unit, x = contract.handbuilt()
    reachable = sum(int(r.sum()) for r in SNIP(progress=False).score(net, x, unit).regions.values())
    print(f"hand-built network: {len(known)} known kernels of {reachable} that reach the unit")
    print(f"{'scorer':<12}" + "".join(f"{'keep ' + str(k):>16}" for k in KEEPS))
    for name in ("ActGrad", "SNIP", "FORCE", "Magnitude", "Random"):
        cells = []
        for keep in KEEPS:
            net, unit, x = contract.handbuilt()
            scorer = _scorer(name, keep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # ties at score 0 fill large keeps
                masks = Masks.from_scores(scorer.score(net, x, unit), keep=keep)
            p, r = precision_recall(contract.kept_kernels(masks), known)
            results[f"{name}@{keep}"] = (p, r)
            cells.append(f"P {p:.2f} R {r:.2f}")
        print(f"{name:<12}" + "".join(f"{c:>16}" for c in cells))
    return results


if __name__ == "__main__":
    main()
