"""Private (ground truth): the identifiable planted variant, ``planted_network(identifiable=True)``.

In the plain planted network each detector still fires weakly on the other concepts' images and
many of its kernels matter little, so its true circuits are not the unique minimal subnetworks
that reproduce the unit on one concept's crops (``docs/faithfulness.md``, "Identifiability").
Here both causes are removed by construction, per concept (independent of the seed):

1. **Gate.** The detector's output ``s`` goes through ``ReLU(s − θ)`` (``features.6``'s bias,
   then ``features.7``), with ``θ`` the largest centre response to the calibration images of every
   other concept plus :data:`GATE_MARGIN` × the median response to its own. Off-concept images
   leave the gate at exactly 0, so a detector adds nothing to the other concept's crops.
2. **Prune.** The kernels whose removal alone raises the ``both`` objective of the gated detector
   (its own concept's calibration images against every other concept's) by less than
   :data:`MIN_EFFECT` are zeroed, the weakest first, and ``θ`` is recomputed; until none is left.
   Every remaining kernel is necessary.

The target unit (``features.8``, a 1×1 conv) sums the gates of the concepts with weight 1.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..ablation import removal_effects
from ..masks import Masks
from ..targets import Unit
from ._concepts import concept_images
from ._planted import (
    PLANTED_SIZE,
    PlantedNetwork,
    _finish,
    _layout,
    _nonzero_block,
    _truth,
    load_detectors,
)
from ._render import CONCEPTS

#: ``θ`` = max off-concept centre response + this × the median on-concept one.
GATE_MARGIN = 0.2
#: Every kernel of a gated detector raises its ``both`` objective by at least this when removed.
MIN_EFFECT = 2e-3
_WEIGHTS = Path(__file__).parent / "weights" / "planted_gated.pt"
_CALIBRATION_SEED = 271828
_PER_CONCEPT = 48
_KEYS = ("0.weight", "3.weight", "6.weight")


@lru_cache(maxsize=1)
def calibration() -> tuple[Tensor, Tensor]:
    """Fixed images (:data:`_PER_CONCEPT` per concept, 32 px) and their concept indices."""
    return concept_images(_PER_CONCEPT * len(CONCEPTS), size=PLANTED_SIZE, seed=_CALIBRATION_SEED)


def _single(state: dict[str, Tensor], theta: float) -> PlantedNetwork:
    """One gated detector as a one-block network: unit ``features.8`` channel 0."""
    model = PlantedNetwork(1, 1, gated=True)
    model.load_state_dict(
        {f"features.{k}": v for k, v in state.items() if not k.startswith("6.b")}
        | {"features.6.bias": torch.tensor([-theta]), "features.8.weight": torch.ones(1, 1, 1, 1)}
    )
    return model.eval()


def _centre(state: dict[str, Tensor], images: Tensor) -> Tensor:
    """The ungated detector's response at the map centre: ``(N,)``."""
    with torch.no_grad():
        out: Tensor = _single(state, 0.0).features[:7](images)
    return out[:, 0, (out.shape[2] - 1) // 2, (out.shape[3] - 1) // 2]


def threshold(state: dict[str, Tensor], own: Tensor) -> float:
    """``θ`` of a detector (``own``: which calibration images are of its concept)."""
    s = _centre(state, calibration()[0])
    return float(s[~own].max()) + GATE_MARGIN * float(s[own].median())


@lru_cache(maxsize=1)
def gated_detectors() -> dict[str, tuple[dict[str, Tensor], float]]:
    """Every concept's gated detector as shipped (``weights/planted_gated.pt``, written by
    ``python -m polyprune.zoo._gated`` from :func:`build`): its state_dict and ``θ``."""
    state = torch.load(_WEIGHTS, map_location="cpu", weights_only=True)
    return {
        name: (
            {k: state[f"{name}.{k}"] for k in (*_KEYS, "0.bias", "3.bias")},
            float(state[f"{name}.theta"]),
        )
        for name in CONCEPTS
    }


def build(name: str) -> tuple[dict[str, Tensor], float]:
    """Gate and prune the shipped detector of concept ``name`` (slow: about a minute)."""
    state = {k: v.clone() for k, v in load_detectors()[name].items()}
    images, labels = calibration()
    own = labels == CONCEPTS.index(name)
    while True:
        theta = threshold(state, own)
        model = _single(state, theta)
        params = dict(model.named_parameters())
        alive = {
            key: params[key].detach().flatten(2).abs().sum(2) > 0
            for key in (*(f"features.{k}" for k in _KEYS), "features.8.weight")
        }
        truth = _truth(model, (name,), [alive])[name]
        _, effects = removal_effects(model, Unit(*model.target), images, own, truth)
        weak = [
            (float(effects[key][o, i]), key, o, i)
            for key, mask in alive.items()
            for o, i in mask.nonzero().tolist()
            if effects[key][o, i] < MIN_EFFECT and key != "features.8.weight"
        ]
        if not weak:
            return state, theta
        weak.sort()
        for _, key, o, i in weak[: max(1, len(weak) // 4)]:
            state[key.removeprefix("features.")][o, i] = 0.0


def assemble(
    names: tuple[str, ...], distractors: int, seed: int
) -> tuple[PlantedNetwork, dict[str, Masks]]:
    """The identifiable planted network: the plain one's layout (same seed: same distractors and
    channel shuffle) with the gated detectors."""
    gen = torch.Generator().manual_seed(seed)
    gated = gated_detectors()
    dets = {name: state for name, (state, _) in gated.items()}
    base = 1 + distractors  # target + distractors; then one readout channel per concept
    model = PlantedNetwork(len(names) + distractors, base + len(names), gated=True)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    lay = _layout(names, distractors, gen, state, dets)
    w_6, b_6, w_8 = state["features.6.weight"], state["features.6.bias"], state["features.8.weight"]
    for k, name in enumerate(lay.blocks):
        w_6[k, lay.ch1[k]], b_6[k] = dets[name]["6.weight"][0], -gated[name][1]
        w_8[lay.out_row[k], k] = 1.0
        lay.circuits[k]["features.6.weight"] = _nonzero_block(w_6, k, lay.ch1[k])
        lay.circuits[k]["features.8.weight"] = _nonzero_block(w_8, lay.out_row[k], k)
    for k in range(len(names)):  # readouts: each concept's gate alone
        w_8[base + k, k] = 1.0
    return _finish(model, state, names, lay)


def _write() -> None:
    """Build every concept's gated detector and write :data:`_WEIGHTS` (atomically)."""
    torch.set_num_threads(1)
    out: dict[str, Tensor] = {}
    for name in CONCEPTS:
        state, theta = build(name)
        out |= {f"{name}.{k}": v for k, v in state.items() if k != "6.bias"}
        out[f"{name}.theta"] = torch.tensor(theta)
        print(f"{name}: θ = {theta:.4f}", flush=True)
    tmp = _WEIGHTS.with_suffix(".tmp")
    torch.save(out, tmp)
    os.replace(tmp, _WEIGHTS)


if __name__ == "__main__":
    _write()
