"""A planted-superposition network: a CNN whose target unit fires for several concepts through
disjoint, known circuits (exact ground truth at kernel granularity).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as valid
from ..masks import Masks
from ..targets import Unit
from ._concepts import _validate_concepts, concept_images
from ._render import CONCEPTS

PLANTED_SIZE = 32
"""Input side (pixels) the planted detectors were trained at: use ``concept_images(size=32)``."""

PLANTED_TARGET: tuple[str, int] = ("features.6", 0)
"""``(layer, channel)`` of the planted polysemantic unit: channel 0 of the last conv layer."""

WIDTHS: tuple[int, int] = (8, 8)
"""Hidden channels of each concept's detector in ``features.0`` and ``features.3``."""

_WEIGHTS = Path(__file__).parent / "weights" / "planted.pt"
_CALIBRATION_SEED = 314159
_CROSS_DENSITY = 0.15  # fraction of cross-block kernels that are non-zero
_CROSS_QUANTILES = (0.05, 0.35)  # cross-kernel norms: uniform between these in-circuit quantiles
# cross kernels add at most this fraction of a channel's planted input (RMS, calibration images)
_CROSS_EFFECT = 0.05


@lru_cache(maxsize=1)
def _calibration() -> Tensor:
    """Fixed images (32 per concept, 32 px) on which cross-kernel effects are measured."""
    images, _ = concept_images(32 * len(CONCEPTS), size=PLANTED_SIZE, seed=_CALIBRATION_SEED)
    return images


def detector(widths: tuple[int, int] = WIDTHS) -> nn.Sequential:
    """One concept detector: the architecture of every block of the planted network."""
    return nn.Sequential(
        nn.Conv2d(3, widths[0], 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(widths[0], widths[1], 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(widths[1], 1, 3, padding=1, bias=False),
    )


class PlantedNetwork(nn.Module):
    """The network returned by :func:`planted_network` (see there).

    ``features`` is ``Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d, Conv2d, ReLU`` (3×3 convs,
    padding 1; receptive field of ``features.6``: 18 px, stride 4). The forward pass returns the
    map of ``features.7`` (post-ReLU), shape
    ``(N, 1 + len(distractors) + len(concepts), H / 4, W / 4)``.

    Attributes
    ----------
    concepts : tuple of str
        Concepts that drive the target channel (:data:`PLANTED_TARGET`).
    distractors : tuple of str
        ``distractors[i]`` drives channel ``1 + i`` of ``features.6``.
    readouts : tuple of int
        ``readouts[i]`` is the channel of ``features.6`` driven by ``concepts[i]``'s detector
        alone: a monosemantic neighbour of the target unit in the same layer.
    """

    def __init__(self, n_blocks: int, n_out: int, widths: tuple[int, int] = WIDTHS) -> None:
        valid.integer("n_blocks", n_blocks, low=1)
        valid.integer("n_out", n_out, low=1)
        valid.integer("widths[0]", widths[0], low=1)
        valid.integer("widths[1]", widths[1], low=1)
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, n_blocks * widths[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(n_blocks * widths[0], n_blocks * widths[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(n_blocks * widths[1], n_out, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.concepts: tuple[str, ...] = ()
        self.distractors: tuple[str, ...] = ()
        self.readouts: tuple[int, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.features(x)
        return out


def load_detectors() -> dict[str, dict[str, Tensor]]:
    """The shipped state_dict of every concept's :func:`detector` (``weights/planted.pt``)."""
    state = torch.load(_WEIGHTS, map_location="cpu", weights_only=True)
    return {
        name: {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        for name in CONCEPTS
    }


def _cross(weight: Tensor, circ: Tensor, inputs: Tensor, gen: torch.Generator) -> Tensor:
    """Random cross-block kernels for a conv ``weight`` whose planted kernels are ``circ``.

    A fraction :data:`_CROSS_DENSITY` of the kernels outside ``circ`` is drawn, with norms uniform
    between two quantiles of the planted kernels' norms. Then, per output channel, they are shrunk
    (never grown) until their contribution to the pre-activation on ``inputs`` (RMS over images and
    positions) is at most :data:`_CROSS_EFFECT` of the planted kernels' contribution.
    """
    rows, cols = circ.shape
    norms = weight[circ].flatten(1).norm(dim=1)
    lo, hi = (float(torch.quantile(norms, q)) for q in _CROSS_QUANTILES)
    direction = torch.randn(rows, cols, *weight.shape[2:], generator=gen)
    direction /= direction.flatten(2).norm(dim=2)[..., None, None]
    norm = lo + (hi - lo) * torch.rand(rows, cols, generator=gen)
    present = (torch.rand(rows, cols, generator=gen) < _CROSS_DENSITY) & ~circ
    extra = direction * (norm * present)[..., None, None]
    pad = weight.shape[-1] // 2
    planted = F.conv2d(inputs, weight * circ[..., None, None], padding=pad)
    added = F.conv2d(inputs, extra, padding=pad)
    rms_planted = planted.pow(2).mean((0, 2, 3)).sqrt()
    rms_added = added.pow(2).mean((0, 2, 3)).sqrt()
    shrink = (_CROSS_EFFECT * rms_planted / rms_added.clamp_min(1e-12)).clamp(max=1.0)
    return extra * shrink[:, None, None, None]


def _validate(
    concepts: Sequence[str] | str, distractors: int, seed: int, cross: float
) -> tuple[str, ...]:
    names = _validate_concepts(concepts)
    if len(names) < 2:
        raise ValueError(f"a planted polysemantic unit needs at least 2 concepts, got {names}")
    free = len(CONCEPTS) - len(names)
    valid.integer(
        "distractors", distractors, low=0, high=free,
        why=f" (the number of concepts not in {names})",
    )  # fmt: skip
    valid.seed("seed", seed)
    valid.number("cross", cross, low=0, why=" (scale of the cross-block kernels)")
    return names


def planted_network(
    concepts: Sequence[str] = ("hstripes", "rings"),
    distractors: int = 2,
    seed: int = 0,
    *,
    cross: float = 1.0,
) -> tuple[PlantedNetwork, dict[str, Masks]]:
    """Build a CNN with a planted polysemantic unit and its exact circuits.

    Shipped detectors (one small CNN per concept, trained on ``concept_images(size=32)``, see
    ``examples/train_zoo.py``) are assembled block-diagonally: each concept and each distractor is a
    block of :data:`WIDTHS` hidden channels. Channel 0 of ``features.6`` (:data:`PLANTED_TARGET`)
    sums the detectors of all ``concepts``; channel ``1 + i`` is the detector of
    ``model.distractors[i]``; channel ``model.readouts[i]`` (after the distractors) is the
    detector of ``concepts[i]`` alone, a monosemantic neighbour of the target as real layers
    have, so the layer's codes can tell the concepts apart (the paper clusters those codes).
    Hidden channels are shuffled (blocks are not contiguous).

    Cross-block kernels are then added to ``features.3`` and ``features.6``: 15 % of the kernels
    between blocks, with norms between the 5th and 35th percentile of the planted kernels' norms,
    shrunk per output channel until they add at most 5 % (RMS, on fixed calibration images) of the
    channel's planted input; everything times ``cross``. Some are larger than the smallest planted
    kernels, so magnitude alone does not reveal the circuits. Cross kernels belong to no circuit.

    What the tests check (pairs hstripes/rings, vstripes/blobs, dstripes/checker; seeds 0–2):
    the target unit's mean centre response (pre-ReLU) is > 0.5 for each concept; keeping only one
    concept's circuit keeps >= 90 % of the mean response to that concept and leaves < 10 % of the
    response to the other; removing one circuit does the opposite; distractor concepts drive the
    target to < 25 % of the weaker concept's response.

    Parameters
    ----------
    concepts : sequence of str, default ("hstripes", "rings")
        At least two distinct names from :data:`CONCEPTS`, all driving the target unit.
    distractors : int, default 2
        Number of extra output channels, each the detector of a concept not in ``concepts``
        (chosen by ``seed``).
    seed : int, default 0
        Seeds the choice of distractors, the channel shuffle and the cross kernels. The detectors
        themselves are fixed (shipped weights).
    cross : float, default 1.0
        Scale of the cross-block kernels (the checks above hold at 1); ``0`` gives an exactly
        block-diagonal network.

    Returns
    -------
    model : PlantedNetwork
        In eval mode. Input ``(N, 3, H, W)`` images in [0, 1] (trained at ``H = W = 32``).
    truth : dict[str, Masks]
        Per concept, kernel-granularity :class:`~polyprune.Masks` over ``features.{0,3,6}.weight``
        whose region is what can reach the target unit (``unit=Unit("features.6", 0)``): True
        exactly on that concept's circuit; rows of ``features.6`` other than the target channel lie
        outside the region and are True (kept), as in :meth:`Masks.from_scores`.

    Raises
    ------
    ValueError
        On unknown or repeated concepts, fewer than two concepts, too many distractors, a negative
        seed or a negative ``cross``.

    Examples
    --------
    >>> from polyprune import zoo
    >>> model, truth = zoo.planted_network()
    >>> images, labels = zoo.concept_images(4, concepts=("hstripes", "rings"), size=32)
    >>> tuple(model(images).shape)
    (4, 5, 8, 8)
    >>> sorted(truth), truth["rings"].unit
    (['hstripes', 'rings'], Unit(layer='features.6', channel=0, position=None))
    """
    names = _validate(concepts, distractors, seed, cross)
    with torch.no_grad():
        return _assemble(names, distractors, seed, float(cross))


def _assemble(
    names: tuple[str, ...], distractors: int, seed: int, cross: float
) -> tuple[PlantedNetwork, dict[str, Masks]]:
    gen = torch.Generator().manual_seed(seed)
    others = [c for c in CONCEPTS if c not in names]
    chosen = tuple(
        others[i] for i in torch.randperm(len(others), generator=gen)[:distractors].tolist()
    )
    blocks = names + chosen
    dets = load_detectors()
    n, (w0, w1) = len(blocks), WIDTHS
    perm0 = torch.randperm(n * w0, generator=gen)
    perm1 = torch.randperm(n * w1, generator=gen)
    ch0 = [perm0[k * w0 : (k + 1) * w0] for k in range(n)]
    ch1 = [perm1[k * w1 : (k + 1) * w1] for k in range(n)]
    out_row = [0] * len(names) + list(range(1, 1 + len(chosen)))

    base = 1 + len(chosen)  # target + distractors; then one readout channel per concept
    model = PlantedNetwork(n, base + len(names))
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    w_0, b_0 = state["features.0.weight"], state["features.0.bias"]
    w_3, b_3 = state["features.3.weight"], state["features.3.bias"]
    w_6 = state["features.6.weight"]
    circuits = []  # per block: the non-zero planted kernels of each conv, as (out, in) masks
    for k, name in enumerate(blocks):
        d = dets[name]
        w_0[ch0[k]], b_0[ch0[k]] = d["0.weight"], d["0.bias"]
        w_3[ch1[k][:, None], ch0[k]], b_3[ch1[k]] = d["3.weight"], d["3.bias"]
        w_6[out_row[k], ch1[k]] = d["6.weight"][0]
        circuit = {}
        for key, weight in (("features.0.weight", w_0), ("features.3.weight", w_3)):
            block = torch.zeros(weight.shape[:2], dtype=torch.bool)
            rows = ch0[k] if key == "features.0.weight" else ch1[k][:, None]
            block[rows, slice(None) if key == "features.0.weight" else ch0[k]] = True
            circuit[key] = block & (weight.flatten(2).abs().sum(2) > 0)
        block6 = torch.zeros(w_6.shape[:2], dtype=torch.bool)
        block6[out_row[k], ch1[k]] = True
        circuit["features.6.weight"] = block6 & (w_6.flatten(2).abs().sum(2) > 0)
        circuits.append(circuit)
    if cross > 0:
        planted = {key: torch.stack([c[key] for c in circuits]).any(0) for key in circuits[0]}
        h = F.max_pool2d(F.relu(F.conv2d(_calibration(), w_0, b_0, padding=1)), 2)
        w_3 += cross * _cross(w_3, planted["features.3.weight"], h, gen)
        h = F.max_pool2d(F.relu(F.conv2d(h, w_3, b_3, padding=1)), 2)
        w_6[:base] += cross * _cross(w_6[:base], planted["features.6.weight"][:base], h, gen)
    for k in range(len(names)):  # readouts: copies of each concept's last kernels, no cross
        w_6[base + k, ch1[k]] = dets[names[k]]["6.weight"][0]
    model.load_state_dict(state)
    model.concepts, model.distractors = names, chosen
    model.readouts = tuple(range(base, base + len(names)))
    return model.eval(), _truth(model, names, circuits[: len(names)])


def _truth(
    model: PlantedNetwork, names: tuple[str, ...], circuits: list[dict[str, Tensor]]
) -> dict[str, Masks]:
    params = dict(model.named_parameters())
    shapes = {key: tuple(params[key].shape) for key in circuits[0]}
    regions = {key: torch.ones(s[:2], dtype=torch.bool) for key, s in shapes.items()}
    region6 = torch.zeros(shapes["features.6.weight"][:2], dtype=torch.bool)
    region6[PLANTED_TARGET[1]] = True
    regions["features.6.weight"] = region6
    return {
        concept: Masks(
            {key: circuit[key] | ~regions[key] for key in circuit},
            "kernel",
            weight_shapes=shapes,
            regions=regions,
            unit=Unit(*PLANTED_TARGET),
        )
        for concept, circuit in zip(names, circuits, strict=True)
    }
