"""CS warns when its starting soft masks silence the unit on every member: a unit gated by a
threshold (the identifiable planted network) gets no gradient and the fit keeps (almost)
nothing, which used to happen without a word."""

from __future__ import annotations

import warnings

import pytest
import torch

import polyprune as pp
from polyprune import zoo


def _fit(model: torch.nn.Module, unit: pp.Unit, concept: str) -> pp.Subnetwork:
    images, labels = zoo.concept_images(140, size=zoo.PLANTED_SIZE, seed=5)
    members = labels == zoo.CONCEPTS.index(concept)
    return pp.fit_subnetwork(
        model, unit, images, members, method="cs", config=pp.CSConfig(epochs=2), progress=False
    )


def test_a_gated_unit_silent_under_the_starting_masks_warns() -> None:
    model, truth = zoo.planted_network(identifiable=True)
    concept = next(iter(truth))
    with pytest.warns(UserWarning, match=r"starting masks .* exactly 0 on all \d+ member"):
        _fit(model, pp.Unit(*model.target), concept)


def test_an_ungated_unit_does_not_warn() -> None:
    model, truth = zoo.planted_network()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*starting masks.*")
        _fit(model, pp.Unit("features.6", 0), next(iter(truth)))
