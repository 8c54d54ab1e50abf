"""Effective masks are the rule (DESIGN "Effective weights"): whatever the method, fit_subnetwork
reports, counts and saves only kept kernels on an input→unit path; the raw masks stay reachable."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_masks_extras import on_a_path

import polyprune as pp
from polyprune import zoo
from polyprune.subnetwork import Subnetwork, methods

NAMES = ["0.weight", "2.weight", "4.weight"]


def fit(method: str) -> tuple[zoo.HandBuilt, Subnetwork]:
    net = zoo.handbuilt()
    members = torch.arange(6) < 3
    options = {"config": pp.CSConfig(epochs=4)} if method == "cs" else {"keep": 0.3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant scores of the baselines
        sub = pp.fit_subnetwork(net.model, net.unit, net.images, members, method, progress=False,
                                **options)  # fmt: skip
    return net, sub


@pytest.mark.parametrize("method", methods())
def test_no_reported_mask_holds_a_dead_kernel(method: str, tmp_path) -> None:
    _, sub = fit(method)
    masks = {n: sub.masks[n] for n in NAMES}
    for layer, name in enumerate(NAMES):
        region = sub.masks.regions[name]
        for o, i in (region & sub.masks[name]).nonzero().tolist():
            assert on_a_path(masks, NAMES, layer, o, i), (method, name, o, i)
    raw = sub.raw_masks
    assert raw is not None  # the method's own masks: what was kept, dead kernels included
    for name in NAMES:  # the effective masks are the raw ones minus the dead kernels
        assert not bool((sub.masks[name] & ~raw[name]).any())
        for o, i in (sub.masks.regions[name] & raw[name] & ~sub.masks[name]).nonzero().tolist():
            assert not on_a_path({n: raw[n] for n in NAMES}, NAMES, NAMES.index(name), o, i)
    assert sub.kept_fraction == sub.masks.kept_fraction() <= raw.kept_fraction()
    sub.save(tmp_path / "sub.pt")
    back = Subnetwork.load(tmp_path / "sub.pt")
    assert all(torch.equal(back.masks[n], sub.masks[n]) for n in NAMES)
    assert back.raw_masks is not None and back.raw_masks.kept_weights() == raw.kept_weights()


def test_dead_kernels_are_dropped_and_counted_out() -> None:
    """A cut that keeps dead kernels (random scores at 30 %): the report drops them."""
    _, sub = fit("random")
    assert sub.raw_masks is not None
    assert sub.masks.kept_weights() < sub.raw_masks.kept_weights()
    assert sub.kept_fraction < sub.raw_masks.kept_fraction()
