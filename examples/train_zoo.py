"""Reproduce the weights shipped in ``polyprune/zoo/weights`` (CPU, seeded, one thread).

    python examples/train_zoo.py                    # all three files, into polyprune/zoo/weights
    python examples/train_zoo.py --only digits-merged --out /tmp/zoo

What is trained (see ``docs/model_cards.md``):

- ``planted.pt``: one small detector per concept (7 × 1000 steps of 128 concept images, 32 px);
  ``zoo.planted_network`` assembles them.
- ``concepts-merged.pt``: a CNN on all 7 concepts with "rings" and "checker" sharing a class.
- ``digits-merged.pt``: a CNN on scikit-learn's digits with 0 and 7 sharing a class.

For each model the script prints its held-out accuracy and the recommended polysemantic unit,
the numbers stated in its :class:`polyprune.zoo.ModelCard` (and checked by the tests), and whether
the weights equal the shipped ones tensor for tensor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from polyprune import zoo

SHIPPED = Path(zoo.__file__).parent / "weights"
TARGETS = ("planted", "concepts-merged", "digits-merged")


def _same_as_shipped(state: dict[str, torch.Tensor], name: str) -> bool:
    path = SHIPPED / f"{name}.pt"
    if not path.exists():
        return False
    shipped = torch.load(path, weights_only=True)
    return shipped.keys() == state.keys() and all(torch.equal(shipped[k], state[k]) for k in state)


def _save(state: dict[str, torch.Tensor], out: Path, name: str) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    same = _same_as_shipped(state, name)  # before writing: out may be the shipped folder
    path = out / f"{name}.pt"
    torch.save(state, path)
    print(f"  wrote {path} ({path.stat().st_size / 1024:.1f} KiB); same tensors as shipped: {same}")


def _classifier(name: str, out: Path) -> None:
    start = time.perf_counter()
    model = zoo.train(name)
    seconds = time.perf_counter() - start
    card = zoo.model_card(name)
    layer, channel, fa, fb = zoo.recommend_unit(model, name)
    print(f"{name}: trained in {seconds:.0f} s")
    print(f"  held-out accuracy {zoo.accuracy(model, name):.4f} (card: {card.accuracy:.4f})")
    print(
        f"  recommended unit ({layer!r}, {channel}): top-{card.unit_top_k} split "
        f"{card.merged[0]} {fa:.2f} / {card.merged[1]} {fb:.2f} "
        f"(card: {card.unit} {card.unit_split})"
    )
    _save(model.state_dict(), out, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED, help="output folder")
    parser.add_argument("--only", choices=TARGETS, action="append", help="train only these")
    args = parser.parse_args()
    torch.set_num_threads(1)  # bit-reproducible and polite on shared machines
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or TARGETS:
        if name == "planted":
            start = time.perf_counter()
            state = zoo.train_planted(log=lambda line: print(" ", line, flush=True))
            print(f"planted detectors: trained in {time.perf_counter() - start:.0f} s")
            _save(state, args.out, "planted")
        else:
            _classifier(name, args.out)


if __name__ == "__main__":
    main()
