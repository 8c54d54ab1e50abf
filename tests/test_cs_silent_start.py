"""CS on a unit gated by a threshold (the identifiable planted network). Under the paper's
starting masks (every weight × 0.5, biases unmasked) the unit is 0 on every member, no gradient
reaches a mask and the fit keeps nothing: CS warns. The default starts every mask at 0.95 and
fades that in while the logits start undecided, so the gate stays open and the fit recovers the
circuit."""

from __future__ import annotations

import warnings

import pytest
import torch

import polyprune as pp
from polyprune import zoo

#: The paper's start: logits 0, nothing faded (0.2's default).
PAPER_START = pp.CSConfig(init=0.5, fade=0.0)


def _fit(
    model: torch.nn.Module, unit: pp.Unit, concept: str, config: pp.CSConfig, n: int = 140
) -> pp.Subnetwork:
    images, labels = zoo.concept_images(n, size=zoo.PLANTED_SIZE, seed=5)
    members = labels == zoo.CONCEPTS.index(concept)
    return pp.fit_subnetwork(
        model, unit, images, members, method="cs", config=config, seed=0, progress=False
    )


def test_a_gated_unit_silent_under_the_starting_masks_warns() -> None:
    model, truth = zoo.planted_network(identifiable=True)
    concept = next(iter(truth))
    with pytest.warns(UserWarning, match=r"starting masks .* exactly 0 on all \d+ member"):
        sub = _fit(model, pp.Unit(*model.target), concept, PAPER_START.replace(epochs=2))
    assert sub.raw_masks.kept_weights() == 0  # only the penalty moved the masks: it keeps nothing


def test_an_ungated_unit_does_not_warn() -> None:
    model, truth = zoo.planted_network()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*starting masks.*")
        _fit(model, pp.Unit("features.6", 0), next(iter(truth)), PAPER_START.replace(epochs=2))


def test_the_default_keeps_a_gated_unit_alive_and_recovers_its_circuit() -> None:
    model, truth = zoo.planted_network(identifiable=True)
    concept = next(iter(truth))
    unit = pp.Unit(*model.target)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*starting masks.*")
        sub = _fit(model, unit, concept, pp.CSConfig())
    found = pp.evaluation.circuit_scores(sub.masks, truth[concept])
    assert found.precision >= 0.9 and found.recall >= 0.85  # 1.00 and 0.91 when written
