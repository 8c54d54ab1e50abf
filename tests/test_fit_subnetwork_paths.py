"""CS on a hand-built network whose circuits are known: it keeps path A, drops path B and noise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

import polyprune as pp
from polyprune.subnetwork import Subnetwork, fit_subnetwork

SIZE = 11
UNIT = pp.Unit("4", 0)  # channel 0 of the last conv, pre-activation, map center

# channels of each conv (layer 0: 3 → 8, layer 2: 8 → 8, layer 4: 8 → 4)
A1, B1, C1 = (
    (0, 1, 2),
    (3, 4),
    (5,),
)  # first-layer detectors: horizontal (A), vertical (B), diag (C)
A2, B2, C2 = (0, 1), (2,), (3,)  # second layer: pools its detectors
IN_A, IN_B, IN_C = (0, 1), (1, 2), (0, 2)  # input channels each pattern is drawn in


def _line_kernel(kind: str) -> Tensor:
    k = -torch.ones(3, 3) / 2
    if kind == "h":
        k[1, :] = 1.0
    elif kind == "v":
        k[:, 1] = 1.0
    else:
        k[range(3), range(3)] = 1.0
    return k


def planted_network(noise: float = 0.02, seed: int = 0) -> tuple[nn.Module, dict[str, Tensor]]:
    """Three convs; unit ``4:0`` sums path A (horizontal), path B (vertical), path C (diagonal).

    Every other kernel carries small random weights (``noise``) so that "dropped" is a decision.
    Returns the model and the ground-truth kernel masks of path A (in the unit's region).
    """
    g = torch.Generator().manual_seed(seed)
    conv0, conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    conv3 = nn.Conv2d(8, 4, 3)
    truth = {
        "0.weight": torch.zeros(8, 3, dtype=torch.bool),
        "2.weight": torch.zeros(8, 8, dtype=torch.bool),
        "4.weight": torch.zeros(4, 8, dtype=torch.bool),
    }
    outs: tuple[int, ...]
    ins: tuple[int, ...]
    with torch.no_grad():
        for conv in (conv0, conv2, conv3):
            conv.weight.copy_(noise * torch.randn(conv.weight.shape, generator=g))
            assert conv.bias is not None
            conv.bias.zero_()
        for outs, ins, kind, is_a in (
            (A1, IN_A, "h", True),
            (B1, IN_B, "v", False),
            (C1, IN_C, "d", False),
        ):
            for o in outs:
                for i in ins:
                    conv0.weight[o, i] = _line_kernel(kind)
                    truth["0.weight"][o, i] = is_a
        for outs, ins, is_a in ((A2, A1, True), (B2, B1, False), (C2, C1, False)):
            for o in outs:
                for i in ins:
                    conv2.weight[o, i] = 0.1
                    truth["2.weight"][o, i] = is_a
        for i in (*A2, *B2, *C2):
            conv3.weight[0, i, 1, 1] = 1.0 if i in A2 else (2.0 if i in B2 else 3.0)
            truth["4.weight"][0, i] = i in A2
    model = nn.Sequential(conv0, nn.ReLU(), conv2, nn.ReLU(), conv3).eval()
    return model, truth


def planted_images(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Half pattern A (horizontal bar), half pattern B (vertical bar); C (diagonal) at random."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g)
    members = torch.arange(n) < n // 2
    c = SIZE // 2
    for k in range(n):
        shift = int(torch.randint(-1, 2, (1,), generator=g))
        if members[k]:
            x[k, list(IN_A), c + shift, 2:-2] += 1.0
        else:
            x[k, list(IN_B), 2:-2, c + shift] += 1.0
        if torch.rand((), generator=g) < 0.5:
            d = torch.arange(2, SIZE - 2)
            x[k, IN_C[0], d, d] += 1.0
            x[k, IN_C[1], d, d] += 1.0
    perm = torch.randperm(n, generator=g)
    return x[perm], members[perm]


def kernel_precision_recall(masks: pp.Masks, truth: dict[str, Tensor]) -> tuple[float, float]:
    tp = fp = fn = 0
    for name, t in truth.items():
        kept, region = masks[name], masks.regions[name]
        if kept.dim() > 2:  # weight granularity: a kernel is kept when any of its weights is
            kept, region = kept.flatten(2).any(2), region.flatten(2).any(2)
        tp += int((kept & t & region).sum())
        fp += int((kept & ~t & region).sum())
        fn += int((~kept & t & region).sum())
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


@pytest.fixture(scope="module")
def fitted() -> Iterator[tuple[nn.Module, dict[str, Tensor], Tensor, Tensor, Subnetwork]]:
    """CS with the paper's objective (``loss="separate"``), every other default.

    Path C fires on half of the members *and* half of the others, with the largest weight: it
    is part of what the unit computes on the members, so ``loss="both"`` (the default) keeps it
    beside path A, while a separating objective drops it.
    """
    model, truth = planted_network()
    images, members = planted_images(128)
    config = pp.CSConfig(loss="separate")
    sub = fit_subnetwork(model, UNIT, images, members, config=config, progress=False)
    yield model, truth, images, members, sub


def test_cs_keeps_path_a_and_drops_path_b_and_distractors(fitted):
    model, truth, images, members, sub = fitted
    precision, recall = kernel_precision_recall(sub.masks, truth)
    kept = sub.kept_fraction
    print(f"\nplanted network: kept fraction {kept:.4f} (path A alone: {14 / 96:.4f}), "
          f"kernel precision {precision:.3f}, recall {recall:.3f}, "
          f"paper's count {sub.paper_kept_fraction:.4f}")  # fmt: skip
    assert precision >= 0.9 and recall >= 0.9
    assert 14 / 96 <= kept <= 16 / 96  # path A is 14 of the 96 kernels that reach the unit
    # the subnetwork fires on pattern A and not on pattern B
    acts = sub.activations(model, images)
    assert acts[~members].max() < acts[members].min()
    center, _ = sub.calibration  # the learned decision threshold lies between the two
    assert acts[~members].max() < center < acts[members].min()
    # history: one entry per epoch, the temperature schedule, a penalty that went down
    assert len(sub.history["loss"]) == 50
    assert sub.history["temperature"][0] == 1.0 and sub.history["temperature"][-1] == 200.0
    assert sub.history["penalty"][-1] < 0.5 * sub.history["penalty"][0]
    assert sub.raw_masks is not None and sub.history["kept_fraction"][-1] == (
        sub.raw_masks.kept_fraction()
    )
    assert sub.unit == pp.Unit("4", 0, (4, 4))  # center of the 9×9 map


def test_soft_and_hard_agree_after_fitting(fitted):
    from polyprune._unit_io import unit_activation
    from polyprune.sparsify import ContinuousSparsifier

    model, _, images, _, sub = fitted
    assert sub.state is not None and sub.state["temperature"] == 200.0
    with ContinuousSparsifier(model, up_to=sub.unit) as cs, torch.no_grad():
        cs.load_state_dict(sub.state)  # the fitted logits at the final temperature
        soft = unit_activation(model, images, sub.unit)
    hard = sub.activations(model, images)
    assert (soft - hard).abs().max() <= 1e-4
