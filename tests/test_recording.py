"""ActivationRecorder: values, reductions, early stop, hook hygiene, bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import layer_output, no_hooks_anywhere
from torch import nn

import polyprune as pp


class Tripwire(nn.Module):
    """A layer that fails the test if the forward ever reaches it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the forward should have stopped before this layer")


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3), Tripwire()
    ).eval()


def test_reductions_match_a_plain_hook():
    model = _net()
    x = torch.randn(6, 3, 9, 9)
    want = layer_output(nn.Sequential(*list(model)[:3]), "2", x)  # (6, 5, 7, 7)
    cases: list[tuple[Any, torch.Tensor]] = [
        ("center", want[:, :, 3, 3]),
        ("mean", want.mean(dim=(2, 3))),
        ("max", want.amax(dim=(2, 3))),
        (None, want),
        (lambda t: t[:, :2].sum(dim=(2, 3)), want[:, :2].sum(dim=(2, 3))),
    ]
    for reduce, expected in cases:
        with pp.ActivationRecorder(model, "2", reduce) as rec:
            rec.run(x)
        torch.testing.assert_close(rec.activations["2"], expected)
    with pp.ActivationRecorder(model, ["2"], "center", position=(0, 6)) as rec:
        rec.run(x)
    torch.testing.assert_close(rec.activations["2"], want[:, :, 0, 6])


def test_in_place_relu_does_not_corrupt_the_record():
    model = _net()
    x = torch.randn(4, 3, 9, 9)
    conv = model[0](x).detach()  # pre-activation, computed out of place
    assert (conv < 0).any()
    with pp.ActivationRecorder(model, ["0", "2"], None) as rec:
        rec.run(x)
    torch.testing.assert_close(rec.activations["0"], conv)  # negative values survive


def test_runs_accumulate_and_clear():
    model = _net()
    with pp.ActivationRecorder(model, "2") as rec:
        first = rec.run(torch.randn(2, 3, 9, 9))["2"]
        rec.run(torch.randn(3, 3, 9, 9))
        assert rec.activations["2"].shape == (5, 5)
        torch.testing.assert_close(rec.activations["2"][:2], first)
        rec.clear()
        assert rec.activations == {}
    last_only = pp.ActivationRecorder(model, "2", accumulate=False)
    last_only.run(torch.randn(2, 3, 9, 9))
    last_only.run(torch.randn(3, 3, 9, 9))
    assert last_only.activations["2"].shape == (3, 5)


def test_forward_stops_after_last_recorded_layer_and_hooks_are_gone():
    model = _net()  # the Tripwire would raise if reached
    rec = pp.ActivationRecorder(model, ["2", "0"])
    out = rec.run(torch.randn(2, 3, 9, 9))
    assert set(out) == {"0", "2"}
    assert no_hooks_anywhere(model)


def test_plain_forward_inside_with_is_recorded_and_hooks_removed_after():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).eval()
    with pp.ActivationRecorder(model, "0", "mean") as rec:
        assert not no_hooks_anywhere(model)
        model(torch.randn(2, 3, 5, 5))
    assert rec.activations["0"].shape == (2, 2)
    assert no_hooks_anywhere(model)


def test_hooks_removed_when_the_forward_raises():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), Tripwire(), nn.Conv2d(2, 2, 1)).eval()
    rec = pp.ActivationRecorder(model, ["0", "2"])
    with pytest.raises(AssertionError, match="should have stopped"):
        rec.run(torch.randn(1, 3, 5, 5))
    assert no_hooks_anywhere(model)
    with pytest.raises(AssertionError), pp.ActivationRecorder(model, ["0", "2"]) as inner:
        inner.run(torch.randn(1, 3, 5, 5))
    assert no_hooks_anywhere(model)


def test_unknown_layer_lists_closest_names(alexnet):
    with pytest.raises(ValueError, match=r"features\.1[0-9]?'"):
        pp.ActivationRecorder(alexnet, ["features.1O"])


def test_bad_inputs():
    model = _net()
    rec = pp.ActivationRecorder(model, "2")
    bad = torch.randn(1, 3, 9, 9)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rec.run(bad)
    with pytest.raises(ValueError, match="reduce"):
        pp.ActivationRecorder(model, "2", "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicates"):
        pp.ActivationRecorder(model, ["2", "2"])
    with pytest.raises(ValueError, match="outside the 7×7 map"):
        pp.ActivationRecorder(model, "2", position=(7, 0)).run(torch.randn(1, 3, 9, 9))
    assert no_hooks_anywhere(model)


def test_layer_that_never_runs_is_reported():
    class Partial(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Conv2d(3, 2, 3), nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = Partial()
    with pytest.raises(ValueError, match="never ran"):
        pp.ActivationRecorder(model, ["used", "unused"]).run(torch.randn(1, 3, 5, 5))
    assert no_hooks_anywhere(model)


def test_shared_module_twice_is_reported():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 2, 3), relu, nn.Conv2d(2, 2, 1), relu, nn.Conv2d(2, 1, 1))
    with pytest.raises(ValueError, match="more than once"):
        pp.ActivationRecorder(model, ["1", "4"]).run(torch.randn(1, 3, 5, 5))


def test_a_model_in_training_mode_is_read_in_eval_mode_and_left_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 5, 5)
    a = pp.ActivationRecorder(model, "2").run(x)["2"]
    b = pp.ActivationRecorder(model, "2").run(x)["2"]
    assert torch.equal(a, b)  # dropout off, running statistics used: deterministic
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too
    with torch.no_grad():
        expected = model.eval()(x)[:, :, 1, 1]
    torch.testing.assert_close(a, expected)


class _Pair(nn.Module):
    """A model whose forward takes a pair of tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.conv(pair[0] + pair[1])
        return out


def test_run_takes_structured_inputs_and_vectors_but_refuses_one_unbatched_image() -> None:
    x = torch.rand(2, 3, 6, 6)
    records = pp.ActivationRecorder(_Pair(), "conv", None).run((x, x))["conv"]
    assert records.shape == (2, 2, 4, 4)
    mlp = nn.Sequential(nn.Linear(5, 3), nn.ReLU())
    assert pp.ActivationRecorder(mlp, "0").run(torch.rand(4, 5))["0"].shape == (4, 3)
    conv = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(
        ValueError, match=r"batch must be 4-D \(N, C, H, W\), got shape \(3, 6, 6\)"
    ):
        pp.ActivationRecorder(conv, "0").run(x[0])  # torch would run it as an unbatched image
    with pytest.raises(TypeError, match="batch must be a tensor of images"):
        pp.ActivationRecorder(conv, "0").run([[1.0, 2.0]])
