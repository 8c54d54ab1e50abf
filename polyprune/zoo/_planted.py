"""A planted-superposition network: a CNN whose target unit fires for several concepts through
disjoint, known circuits (exact ground truth at kernel granularity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as valid
from .._model import random_state_kept
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
    ``(N, 1 + len(distractors) + len(concepts), H / 4, W / 4)``. With ``gated=True`` (the
    identifiable variant) ``features.6`` has one output per block and a bias (the gate), and
    ``features`` goes on with ``ReLU, Conv2d (1×1, no bias), ReLU``: the unit's layer is
    ``features.8`` (same receptive field), the forward pass returns ``features.9``.

    Attributes
    ----------
    target : tuple of (str, int)
        ``(layer, channel)`` of the planted polysemantic unit: :data:`PLANTED_TARGET`, or
        ``("features.8", 0)`` when gated.
    concepts : tuple of str
        Concepts that drive the target channel.
    distractors : tuple of str
        ``distractors[i]`` drives channel ``1 + i`` of the target's layer.
    readouts : tuple of int
        ``readouts[i]`` is the channel of the target's layer driven by ``concepts[i]``'s
        detector alone: a monosemantic neighbour of the target unit in the same layer.
    """

    def __init__(
        self, n_blocks: int, n_out: int, widths: tuple[int, int] = WIDTHS, *, gated: bool = False
    ) -> None:
        valid.integer("n_blocks", n_blocks, low=1)
        valid.integer("n_out", n_out, low=1)
        valid.integer("widths[0]", widths[0], low=1)
        valid.integer("widths[1]", widths[1], low=1)
        super().__init__()
        last: list[nn.Module] = [
            nn.Conv2d(n_blocks * widths[1], n_out, 3, padding=1, bias=False),
            nn.ReLU(),
        ]
        if gated:  # one gate channel per block (bias -θ), then a 1×1 conv that sums them
            last = [
                nn.Conv2d(n_blocks * widths[1], n_blocks, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(n_blocks, n_out, 1, bias=False),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(
            nn.Conv2d(3, n_blocks * widths[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(n_blocks * widths[0], n_blocks * widths[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            *last,
        )
        self.target: tuple[str, int] = (f"features.{len(self.features) - 2}", 0)
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
    concepts: Sequence[str] | str, distractors: int, seed: int, cross: float | None,
    identifiable: bool,
) -> tuple[tuple[str, ...], float]:  # fmt: skip
    names = _validate_concepts(concepts)
    if len(names) < 2:
        raise ValueError(f"a planted polysemantic unit needs at least 2 concepts, got {names}")
    free = len(CONCEPTS) - len(names)
    valid.integer(
        "distractors", distractors, low=0, high=free,
        why=f" (the number of concepts not in {names})",
    )  # fmt: skip
    valid.seed("seed", seed)
    valid.flag("identifiable", identifiable)
    if cross is None:
        return names, 0.0 if identifiable else 1.0
    scale = valid.number("cross", cross, low=0, why=" (scale of the cross-block kernels)")
    if identifiable and scale != 0:
        raise ValueError(
            f"cross must be 0 or None with identifiable=True (cross-block kernels would feed one "
            f"concept's detector into another's), got {cross!r}"
        )
    return names, scale


def planted_network(
    concepts: Sequence[str] = ("hstripes", "rings"),
    distractors: int = 2,
    seed: int = 0,
    *,
    cross: float | None = None,
    identifiable: bool = False,
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
    cross : float or None, default None
        Scale of the cross-block kernels (the checks above hold at 1); ``0`` gives an exactly
        block-diagonal network. ``None``: 1, or 0 with ``identifiable=True`` (which needs 0).
    identifiable : bool, default False
        The variant whose true circuits are identifiable by construction: block-diagonal, each
        detector pruned to the kernels whose removal alone changes its output and *gated*
        (``features.6`` has one output per block, with bias ``−θ``, then ``ReLU``), so that it
        is exactly 0 at the map centre on every other concept's calibration images; a 1×1
        ``features.8`` sums the concepts' gates into the target unit ``("features.8", 0)``
        (``model.target``; distractors and readouts as above, in ``features.8``). On one
        concept's crops the true circuit then reproduces the unit exactly and is silent on the
        other concept's, and removing any of its kernels changes that
        (:mod:`polyprune.zoo._gated`; ``docs/faithfulness.md``).

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
        seed, a negative ``cross``, or a non-zero ``cross`` with ``identifiable=True``.

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
    names, scale = _validate(concepts, distractors, seed, cross, identifiable)
    with torch.no_grad(), random_state_kept():  # the modules' default init draws from torch's
        if identifiable:
            from ._gated import assemble  # the gated variant builds on this module

            return assemble(names, distractors, seed)
        return _assemble(names, distractors, seed, scale)


@dataclass
class _Layout:
    """The block-diagonal skeleton shared by both variants: the blocks (concepts, then the
    distractors), their shuffled hidden channels, the row of the target's layer each drives, and
    each block's planted kernels in ``features.0`` and ``features.3`` (``circuits``)."""

    blocks: tuple[str, ...]
    chosen: tuple[str, ...]
    ch0: list[Tensor]
    ch1: list[Tensor]
    out_row: list[int]
    circuits: list[dict[str, Tensor]]


def _layout(
    names: tuple[str, ...], distractors: int, gen: torch.Generator, state: dict[str, Tensor],
    dets: dict[str, dict[str, Tensor]],
) -> _Layout:  # fmt: skip
    """Draw the distractors and the channel shuffle; write every block's first two convs."""
    others = [c for c in CONCEPTS if c not in names]
    chosen = tuple(
        others[i] for i in torch.randperm(len(others), generator=gen)[:distractors].tolist()
    )
    blocks = names + chosen
    n, (w0, w1) = len(blocks), WIDTHS
    perm0 = torch.randperm(n * w0, generator=gen)
    perm1 = torch.randperm(n * w1, generator=gen)
    ch0 = [perm0[k * w0 : (k + 1) * w0] for k in range(n)]
    ch1 = [perm1[k * w1 : (k + 1) * w1] for k in range(n)]
    out_row = [0] * len(names) + list(range(1, 1 + len(chosen)))
    w_0, b_0 = state["features.0.weight"], state["features.0.bias"]
    w_3, b_3 = state["features.3.weight"], state["features.3.bias"]
    circuits = []
    for k, name in enumerate(blocks):
        d = dets[name]
        w_0[ch0[k]], b_0[ch0[k]] = d["0.weight"], d["0.bias"]
        w_3[ch1[k][:, None], ch0[k]], b_3[ch1[k]] = d["3.weight"], d["3.bias"]
        circuits.append({
            "features.0.weight": _nonzero_block(w_0, ch0[k], slice(None)),
            "features.3.weight": _nonzero_block(w_3, ch1[k][:, None], ch0[k]),
        })  # fmt: skip
    return _Layout(blocks, chosen, ch0, ch1, out_row, circuits)


def _nonzero_block(weight: Tensor, rows: Tensor | int, cols: Tensor | int | slice) -> Tensor:
    """The kernels ``(rows, cols)`` of ``weight`` that are not all zero, as an (out, in) mask."""
    block = torch.zeros(weight.shape[:2], dtype=torch.bool)
    block[rows, cols] = True
    return block & (weight.flatten(2).abs().sum(2) > 0)


def _assemble(
    names: tuple[str, ...], distractors: int, seed: int, cross: float
) -> tuple[PlantedNetwork, dict[str, Masks]]:
    gen = torch.Generator().manual_seed(seed)
    dets = load_detectors()
    n = len(names) + distractors
    base = 1 + distractors  # target + distractors; then one readout channel per concept
    model = PlantedNetwork(n, base + len(names))
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    lay = _layout(names, distractors, gen, state, dets)
    w_0, b_0 = state["features.0.weight"], state["features.0.bias"]
    w_3, b_3 = state["features.3.weight"], state["features.3.bias"]
    w_6 = state["features.6.weight"]
    for k, name in enumerate(lay.blocks):
        w_6[lay.out_row[k], lay.ch1[k]] = dets[name]["6.weight"][0]
        lay.circuits[k]["features.6.weight"] = _nonzero_block(w_6, lay.out_row[k], lay.ch1[k])
    if cross > 0:
        planted = {
            key: torch.stack([c[key] for c in lay.circuits]).any(0) for key in lay.circuits[0]
        }
        h = F.max_pool2d(F.relu(F.conv2d(_calibration(), w_0, b_0, padding=1)), 2)
        w_3 += cross * _cross(w_3, planted["features.3.weight"], h, gen)
        h = F.max_pool2d(F.relu(F.conv2d(h, w_3, b_3, padding=1)), 2)
        w_6[:base] += cross * _cross(w_6[:base], planted["features.6.weight"][:base], h, gen)
    for k in range(len(names)):  # readouts: copies of each concept's last kernels, no cross
        w_6[base + k, lay.ch1[k]] = dets[names[k]]["6.weight"][0]
    return _finish(model, state, names, lay)


def _finish(
    model: PlantedNetwork, state: dict[str, Tensor], names: tuple[str, ...], lay: _Layout
) -> tuple[PlantedNetwork, dict[str, Masks]]:
    """Load ``state``, name the blocks, and build the truth masks of the concepts' circuits."""
    model.load_state_dict(state)
    model.concepts, model.distractors = names, lay.chosen
    base = 1 + len(lay.chosen)
    model.readouts = tuple(range(base, base + len(names)))
    return model.eval(), _truth(model, names, lay.circuits[: len(names)])


def _truth(
    model: PlantedNetwork, names: tuple[str, ...], circuits: list[dict[str, Tensor]]
) -> dict[str, Masks]:
    params = dict(model.named_parameters())
    shapes = {key: tuple(params[key].shape) for key in circuits[0]}
    regions = {key: torch.ones(s[:2], dtype=torch.bool) for key, s in shapes.items()}
    layer, channel = model.target
    region = torch.zeros(shapes[f"{layer}.weight"][:2], dtype=torch.bool)
    region[channel] = True
    regions[f"{layer}.weight"] = region
    return {
        concept: Masks(
            {key: circuit[key] | ~regions[key] for key in circuit},
            "kernel",
            weight_shapes=shapes,
            regions=regions,
            unit=Unit(*model.target),
        )
        for concept, circuit in zip(names, circuits, strict=True)
    }
