"""The model comes back bit for bit: buffers in train mode, dropped sparsifiers, failed removals,
and tied weights refused rather than half-masked."""

from __future__ import annotations

import gc

import pytest
import torch
from helpers import assert_restored, snapshot
from torch import nn
from torch.nn.utils import parametrize

import polyprune as pp
from polyprune import zoo


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_reading_a_model_in_train_mode_changes_no_buffer(resnet18):
    model = resnet18.train()
    try:
        before = _state(model)
        buffers = [k for k in before if k.endswith(("running_mean", "running_var"))]
        assert len(buffers) == 40  # 20 BatchNorms: their statistics must stay as they are
        x = torch.rand(6, 3, 64, 64)
        unit = pp.Unit("layer2.0.conv2", 3)
        pp.top_activating(model, unit, x, k=2, progress=False)
        pp.ActivationRecorder(model, "layer1").run(x)
        pp.fit_subnetwork(model, unit, x, torch.arange(6) < 3, "snip", keep=0.1)
        assert _same(model, before)
        assert all(m.training for m in model.modules())
    finally:
        resnet18.eval()


def test_a_study_on_a_model_in_train_mode_changes_no_buffer():
    model, _ = zoo.planted_network()
    first = model.features[0]
    assert isinstance(first, nn.Conv2d)
    model.features.insert(1, nn.BatchNorm2d(first.out_channels))  # a BN to disturb
    model.train()
    images, _ = zoo.concept_images(200, size=zoo.PLANTED_SIZE, seed=5)
    before = _state(model)
    pp.study(model, pp.Unit("features.7", 0), images, k=40, methods=("snip",), progress=False)
    assert _same(model, before) and all(m.training for m in model.modules())


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))


def test_a_sparsifier_dropped_without_remove_restores_the_model_when_collected():
    model = _net()
    model[0].weight.requires_grad_(False)  # a frozen weight stays frozen
    before = snapshot(model)
    cs = pp.ContinuousSparsifier(model, up_to=pp.Unit("2", 1))
    originals = [model.get_parameter(f"{i}.parametrizations.weight.original") for i in (0, 2)]
    assert not any(p.requires_grad for p in originals)  # frozen while attached
    del cs
    gc.collect()
    assert_restored(model, before)

    def user_code() -> None:
        sparsifier = pp.ContinuousSparsifier(model, up_to=pp.Unit("2", 1))
        sparsifier.penalty()
        raise KeyError("user code fails before remove()")

    with pytest.raises(KeyError):
        user_code()
    gc.collect()
    assert_restored(model, before)


def test_a_fault_inside_remove_leaves_the_sparsifier_attached_and_retryable(monkeypatch):
    model = _net()
    before = snapshot(model)
    cs = pp.ContinuousSparsifier(model, up_to=pp.Unit("2", 1))
    real = parametrize.remove_parametrizations
    calls = {"n": 0}

    def flaky(module, name, leave_parametrized=True):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("fault inside remove")
        return real(module, name, leave_parametrized=leave_parametrized)

    monkeypatch.setattr(parametrize, "remove_parametrizations", flaky)
    with pytest.raises(RuntimeError, match="fault inside remove"):
        cs.remove()
    assert cs.attached  # it does not pretend to be detached
    cs.remove()
    assert not cs.attached
    assert_restored(model, before)


def _interrupt_first_removal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside torch's ``remove_parametrizations``, once; later calls go through."""
    real = parametrize.remove_parametrizations
    calls = {"n": 0}

    def interrupted(module, name, leave_parametrized=True):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(module, name, leave_parametrized=leave_parametrized)

    monkeypatch.setattr(parametrize, "remove_parametrizations", interrupted)


def _masks() -> pp.Masks:
    return pp.Masks(
        {"0.weight": torch.tensor([[True] * 3, [False] * 3, [True] * 3, [False] * 3]),
         "2.weight": torch.ones(2, 4, dtype=torch.bool)},
        "kernel",
    )  # fmt: skip


def test_an_interrupted_masks_remove_can_be_retried(monkeypatch):
    model, masks = _net(), _masks()
    before = snapshot(model)
    masks.apply(model)
    _interrupt_first_removal(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        masks.remove(model)
    masks.remove(model)  # before: "these masks are not applied to this model"
    assert_restored(model, before)
    masks.apply(model)  # before: "already masked or pruned"
    masks.remove(model)
    assert_restored(model, before)


def test_an_interrupted_applied_exit_can_be_retried(monkeypatch):
    model, masks = _net(), _masks()
    before = snapshot(model)
    ctx = masks.applied(model)
    _interrupt_first_removal(monkeypatch)
    with pytest.raises(KeyboardInterrupt), ctx:
        pass
    assert parametrize.is_parametrized(model[0]) or parametrize.is_parametrized(model[2])
    ctx.__exit__(None, None, None)  # before: a no-op, the model left masked for good
    assert_restored(model, before)
    with masks.applied(model):
        pass
    assert_restored(model, before)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.c2.weight = self.c1.weight  # one Parameter, two uses
        self.out = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.c2(torch.relu(self.c1(x))))


def test_tied_weights_are_refused_before_any_change():
    model = Tied()
    before = snapshot(model)
    unit, x = pp.Unit("out", 0), torch.rand(4, 3, 8, 8)
    masks = pp.Masks({"c1.weight": torch.ones(3, 3, dtype=torch.bool)}, "kernel")
    calls = [
        lambda: masks.applied(model).__enter__(),
        lambda: pp.SNIP().score(model, x, unit),
        lambda: pp.ContinuousSparsifier(model, up_to=unit),
        lambda: pp.fit_subnetwork(model, unit, x, torch.arange(4) < 2, "snip", keep=0.5),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"'c1.weight' is tied: .*\['c2.weight'\]"):
            call()
        assert_restored(model, before)


def test_masks_applied_cannot_be_entered_twice():
    model = _net()
    masks = pp.Masks({"0.weight": torch.ones(4, 3, dtype=torch.bool)}, "kernel")
    context = masks.applied(model)
    with context:
        with pytest.raises(RuntimeError, match="already active"), context:
            pass
        with pytest.raises(ValueError, match="already masked"), masks.applied(model):
            pass
    assert not parametrize.is_parametrized(model[0])
