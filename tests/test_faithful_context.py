"""benchmarks.claims.faithful.context: the planted circuit in the context of the default
method's own subnetwork S, on a network whose every marginal effect is known exactly, and old
rows without these counts still load and render."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import polyprune as pp
from benchmarks.claims.faithful import FaithfulConfig, Rows, context
from benchmarks.claims.faithful.methods import IdentRow
from benchmarks.claims.faithful.recovery import identifiability_table


def _duplicated() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``A`` (1×1 conv, 2 → 4 channels), ReLU, ``B`` (1×1 conv, 4 → 1), integer weights. On the
    members (input channel 0 on, 1 off) channels 0–3 of ``A`` all copy the input; ``B`` adds
    channels 0, 1, 2 and subtracts 3: the unit is 1 + 1 + 1 − 1 = 2. The planted circuit is the
    paths through channels 0 and 1; the path through channel 2 duplicates them, the one
    through channel 3 cancels it. Every other kernel is 0. Non-members: channel 1 on, unit 0."""
    a, b = nn.Conv2d(2, 4, 1, bias=False), nn.Conv2d(4, 1, 1, bias=False)
    with torch.no_grad():
        a.weight.zero_()
        a.weight[:, 0] = 1.0
        b.weight.copy_(torch.tensor([1.0, 1.0, 1.0, -1.0]).reshape(1, 4, 1, 1))
    model = nn.Sequential(a, nn.ReLU(), b)
    images = torch.zeros(4, 2, 3, 3)
    images[:2, 0] = 1.0
    images[2:, 1] = 1.0
    return model.eval(), images, torch.arange(4) < 2


def _masks(a: list[tuple[int, int]], b: list[int]) -> pp.Masks:
    """Kernel masks keeping ``a``'s ``(out, in)`` kernels of ``A`` and ``b``'s inputs of ``B``;
    every kernel in the region."""
    ka, kb = torch.zeros(4, 2, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool)
    for o, i in a:
        ka[o, i] = True
    kb[0, b] = True
    regions = {"0.weight": torch.ones_like(ka), "2.weight": torch.ones_like(kb)}
    return pp.Masks({"0.weight": ka, "2.weight": kb}, "kernel", regions=regions)


def test_a_duplicated_paths_missing_copy_is_substituted_and_its_substitute_needed() -> None:
    model, images, members = _duplicated()
    truth = _masks([(0, 0), (1, 0)], [0, 1])
    # S: the circuit's path through channel 0, its duplicate through channel 2 (extras), the
    # circuit's A kernel into channel 1 without B's (a missed circuit kernel), and the zero
    # kernel A[2, 1] (an extra nothing needs). S reproduces the unit: objective 0.
    s = _masks([(0, 0), (1, 0), (2, 0), (2, 1)], [0, 2])
    before = {n: p.clone() for n, p in model.state_dict().items()}
    unit = pp.Unit("2", 0, (1, 1))
    e = context.effects_in(model, unit, images, members, s)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    a, b = e["0.weight"], e["2.weight"]
    # put back alone, B[0, 1] overshoots (3 against 2, over the members' RMS 2): gain −0.25
    assert torch.allclose(b[0, 1], torch.tensor(-0.25))
    assert bool((b[0, [0, 2]] > 0).all()) and bool((a[[0, 2], 0] > 0).all())  # needed
    assert a[1, 0] == 0 and a[2, 1] == 0  # nothing reads channel 1; a zero kernel
    assert a[3, 0] == 0 and b[0, 3] == 0  # the cancelling path, half of it alone: nothing
    got = context.counts(s, truth, e)
    assert got == {
        "missed": 1, "substituted": 1, "inert": 0, "extras": 3, "needed": 2,
        "oracle_tp": 3, "oracle_fp": 2, "oracle_fn": 1,  # no rewarded move helps the circuit
        "rewarded_tp": 2, "rewarded_fp": 2, "rewarded_fn": 2,  # drops A[1, 0]: effect 0
    }  # fmt: skip
    assert context.cut_off(model, s, truth, unit) == 0  # A[1, 0] feeds channel 1: on a path
    own = context.f1(4 - got["missed"], got["extras"], got["missed"])
    assert own == pytest.approx(pp.evaluation.circuit_scores(s, truth).f1) == 0.6


def test_a_missed_kernel_whose_neighbour_is_missing_too_is_cut_off_and_inert() -> None:
    model, images, members = _duplicated()
    truth = _masks([(0, 0), (1, 0)], [0, 1])
    s = _masks([(0, 0), (2, 0)], [0, 2])  # the circuit's path through channel 1 missing whole
    unit = pp.Unit("2", 0, (1, 1))
    got = context.counts(s, truth, context.effects_in(model, unit, images, members, s))
    assert (got["missed"], got["substituted"], got["inert"]) == (2, 2, 2)
    assert context.cut_off(model, s, truth, unit) == 2
    with_a = _masks([(0, 0), (1, 0), (2, 0)], [0, 2])  # its A kernel back: B[0, 1] has a path
    assert context.cut_off(model, with_a, truth, unit) == 0


def test_counts_follow_the_signs_of_the_effects_inside_the_region_only() -> None:
    # kernels k0..k6 of one (1, 7) weight: truth k0-k3 and k6; S keeps k0, k1, k4, k6; k6 is
    # outside the region (not counted, whatever its effect)
    truth = pp.Masks(
        {"w": torch.tensor([[1, 1, 1, 1, 0, 0, 1]])}, "kernel",
        regions={"w": torch.tensor([[1, 1, 1, 1, 1, 1, 0]])},
    )  # fmt: skip
    kept = pp.Masks({"w": torch.tensor([[1, 1, 0, 0, 1, 0, 1]])}, "kernel")
    effects = {"w": torch.tensor([[1.0, 0.0, 0.5, 0.0, -1.0, 2.0, 3.0]])}
    assert context.counts(kept, truth, effects) == {
        "missed": 2, "substituted": 1, "inert": 1, "extras": 1, "needed": 0,
        "oracle_tp": 3, "oracle_fp": 0, "oracle_fn": 1,  # + k2, − k4
        "rewarded_tp": 2, "rewarded_fp": 1, "rewarded_fn": 2,  # + k2, + k5, − k1, − k4
    }  # fmt: skip


def _row(**changes: object) -> IdentRow:
    base = IdentRow("planted-0", "default pairs", 0, 0, "rings", 0.03, 0.02, "CS both",
                    kernels=10, free=1, weak=2, min_effect=-0.01, init_silent=0.0,
                    paper_silent=0.5)  # fmt: skip
    return IdentRow.from_dict({**base.to_dict(), **changes})


def test_rows_without_the_counts_load_and_render_without_them() -> None:
    old = _row().to_dict()  # a row as runs before these counts wrote it
    for name in ("context", "cut", *context.FIELDS):
        del old[name]
    data = {**Rows(FaithfulConfig()).to_dict(), "identifiability": [old, old]}
    rows = Rows.from_dict(json.loads(json.dumps(data)))
    assert rows.identifiability == [_row(), _row()] and not rows.identifiability[0].context
    table = identifiability_table(rows.identifiability, ["default pairs"])
    assert table[0].endswith(" | ".join(context.HEADER) + " |")
    assert table[2].endswith("| – | – | – | – |")
    assert context.line(rows.identifiability, "default pairs") is None


def test_measured_rows_render_shares_and_mean_f1() -> None:
    counts = {"missed": 4, "substituted": 3, "inert": 1, "cut": 2, "extras": 2, "needed": 1,
              "oracle_tp": 8, "oracle_fp": 1, "oracle_fn": 3,
              "rewarded_tp": 6, "rewarded_fp": 4, "rewarded_fn": 5}  # fmt: skip
    rows = [_row(context="CS both", **counts), _row()]
    cells = identifiability_table(rows, ["default pairs"])[2].strip("|").split("|")
    # S: tp 6 fp 2 fn 4 → 12/18; oracle 16/20; every rewarded move 12/21
    assert [c.strip() for c in cells[-4:]] == ["75% of 4", "25% / 50%", "50% of 2",
                                               "0.67 / 0.80 / 0.57"]  # fmt: skip
    line = context.line(rows, "default pairs")
    assert line is not None and "(mean over 1 clusters): S's F1 is 0.667" in line
    assert "reach 0.800" in line and "gives 0.571" in line and "75% would not" in line
    assert "25% change it not at all, and putting back the other 50% raises" in line
    assert "; 50% of the missed lie on no input→unit path through S even when put back" in line
    assert context.line(rows, "cross=0") is None
