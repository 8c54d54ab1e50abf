"""The registered "ablation" method (polyprune.ablation.Ablation) through fit_subnetwork."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_restored, snapshot

import polyprune as pp
from polyprune import zoo
from polyprune.ablation import DEFAULT_TAU, Ablation


def test_registered_and_exact_on_the_handbuilt_network() -> None:
    assert "ablation" in pp.methods.available()
    net = zoo.handbuilt()
    before = snapshot(net.model)
    sub = pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3,
                            Ablation(tau=1e-3, loss="preserve", progress=False))  # fmt: skip
    assert_restored(net.model, before)
    assert sub.method == "ablation" and sub.state is not None and sub.state["tau"] == 1e-3
    found = pp.evaluation.circuit_scores(sub.masks, net.truth, sub.state["effects"])
    assert (found.precision, found.recall, found.roc_auc) == (1.0, 1.0, 1.0)
    assert len(sub.history["objective"]) == 3  # one entry per layer, from the unit back


def test_by_name_with_the_default_threshold() -> None:
    net = zoo.handbuilt()
    sub = pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3, "ablation",
                            progress=False)  # fmt: skip
    assert sub.method == "ablation" and sub.state is not None
    assert sub.state["tau"] == DEFAULT_TAU
    assert set(sub.state["effects"]) == set(net.truth)  # per weight that can reach the unit
    assert 0 <= sub.kept_fraction <= 1


@pytest.mark.parametrize(
    ("options", "match"),
    [({"tau": -1.0}, "tau must be"), ({"tau": True}, "tau must be"),
     ({"ablation": "resample"}, "ablation must be"), ({"max_batch": 0}, "max_batch must be"),
     ({"loss": "nope"}, "nope")],
)  # fmt: skip
def test_bad_options_are_refused(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        Ablation(**options)


def test_only_kernel_granularity() -> None:
    net = zoo.handbuilt()
    with pytest.raises(ValueError, match="granularity must be 'kernel'"):
        pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3, "ablation",
                          granularity="weight")  # fmt: skip


def test_removal_effects_needs_kernel_masks() -> None:
    net = zoo.handbuilt()
    weight = pp.Masks({n: torch.ones(s, dtype=torch.bool) for n, s in
                       net.truth.weight_shapes.items()}, "weight")  # fmt: skip
    with pytest.raises(ValueError, match="kernel granularity"):
        pp.ablation.removal_effects(net.model, net.unit, net.images, torch.arange(6) < 3, weight)
