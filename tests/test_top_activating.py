"""top_activating: equals brute force, crops are exact, streaming and tie-breaking."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import assert_same_top, integer_valued, layer_output, no_hooks_anywhere
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import polyprune as pp


def _small() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3),
    ).eval()  # fmt: skip


class Images(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], i % 3


def test_equals_brute_force_on_full_images():
    model = _small()
    x = torch.randn(50, 3, 40, 40)
    top = pp.top_activating(model, pp.Unit("5", 2), x, k=7, batch_size=8, progress=False)
    full = layer_output(model, "5", x)
    assert_same_top(top.indices, top.values, full[:, 2, 3, 3])
    torch.testing.assert_close(top.codes, full[top.indices, :, 3, 3], rtol=1e-5, atol=1e-6)
    assert top.unit == pp.Unit("5", 2, (3, 3))
    assert top.field is not None and top.field.output_size == (8, 8)
    assert len(top) == 7


def test_alexnet_paper_unit(alexnet):
    torch.manual_seed(3)
    x = torch.rand(12, 3, 224, 224)
    top = pp.top_activating(alexnet, pp.Unit("features.10", 255), x, k=4, progress=False)
    full = layer_output(alexnet, "features.10", x)
    assert_same_top(top.indices, top.values, full[:, 255, 6, 6], atol=1e-7)
    assert top.codes.shape == (4, 256)


def test_same_result_from_tensor_dataset_loader_and_generator():
    model = _small()
    x = torch.randn(30, 3, 40, 40)
    unit = pp.Unit("3", 1, (2, 5))
    results = [
        pp.top_activating(model, unit, data, k=5, batch_size=4, progress=False)
        for data in (
            x,
            Images(x),
            TensorDataset(x),
            DataLoader(Images(x), batch_size=7),
            (x[i : i + 9] for i in range(0, 30, 9)),
        )
    ]
    reference = layer_output(model, "3", x)[:, :, 2, 5]
    for top in results:
        assert_same_top(top.indices, top.values, reference[:, 1])


def test_crop_false_gives_the_same_values_as_exact_crops():
    model = _small()
    x = torch.randn(20, 3, 40, 40)
    for position in [None, (0, 0), (7, 4)]:
        unit = pp.Unit("5", 0, position)
        a = pp.top_activating(model, unit, x, k=6, progress=False)
        b = pp.top_activating(model, unit, x, k=6, crop=False, progress=False)
        assert a.unit == b.unit and a.unit.position is not None
        i, j = a.unit.position
        reference = layer_output(model, "5", x)[:, 0, i, j]
        assert_same_top(a.indices, a.values, reference)
        assert_same_top(b.indices, b.values, reference)
        assert b.field is None


def test_crop_false_works_for_a_layer_without_a_map():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(25, 3, 8, 8)
    top = pp.top_activating(model.eval(), pp.Unit("3", 2), x, k=4, batch_size=6, crop=False,
                            progress=False)  # fmt: skip
    values = layer_output(model, "3", x)[:, 2]
    assert_same_top(top.indices, top.values, values)
    assert top.unit == pp.Unit("3", 2)
    assert top.codes.shape == (4, 5)
    # a unit without a map sees the whole image: crop=True (the default) has nothing to cut
    cropped = pp.top_activating(model, pp.Unit("3", 2), x, k=4, progress=False)
    assert cropped.field is None and torch.equal(cropped.indices, top.indices)


def test_ties_go_to_the_lower_index_across_batches():
    # integer weights and inputs: every activation is an exact integer, whatever the batch size,
    # so the 40 identical images tie exactly (with float weights a batch of 1 and a batch of 3
    # may differ in the last bit, and differently on another CPU)
    model = integer_valued(_small())
    x = torch.ones(40, 3, 40, 40)  # every image gives the same activation
    reference = layer_output(model, "5", x[:1])[0, 3]
    assert float(reference.abs().max()) > 0 and bool((reference == reference.round()).all())
    top = pp.top_activating(model, pp.Unit("5", 3), x, k=10, batch_size=3, progress=False)
    assert top.indices.tolist() == list(range(10))


def test_memory_is_bounded_by_k():
    model = _small()
    seen: list[int] = []

    def stream():
        for i in range(50):  # 400 images, never held at once
            seen.append(i)
            yield torch.randn(8, 3, 40, 40)

    top = pp.top_activating(model, pp.Unit("5", 1), stream(), k=3, progress=False)
    assert len(seen) == 50 and len(top) == 3 and top.codes.shape == (3, 4)
    assert int(top.indices.max()) < 400


def test_progress_bar_can_be_turned_off(capsys):
    model = _small()
    pp.top_activating(model, pp.Unit("5", 1), torch.randn(9, 3, 40, 40), k=2, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    pp.top_activating(model, pp.Unit("5", 1), torch.randn(9, 3, 40, 40), k=2, progress=True)
    assert "top-2" in capsys.readouterr().err


def test_bad_input_is_refused_before_work():
    model = _small()
    x = torch.randn(5, 3, 40, 40)
    unit = pp.Unit("5", 1)
    for k in (0, -1, 6):
        with pytest.raises(ValueError, match="k"):
            pp.top_activating(model, unit, x, k=k, progress=False)
    with pytest.raises(ValueError, match="empty"):
        pp.top_activating(model, unit, torch.empty(0, 3, 40, 40), k=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        pp.top_activating(model, unit, iter([]), k=1, progress=False)
    with pytest.raises(ValueError, match="larger than the data set"):
        pp.top_activating(model, unit, iter([x]), k=6, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        pp.top_activating(model, pp.Unit("5", 4), x, k=1, progress=False)
    with pytest.raises(ValueError, match="unknown layer"):
        pp.top_activating(model, pp.Unit("6", 0), x, k=1, progress=False)
    with pytest.raises(ValueError, match="4-D"):
        pp.top_activating(model, unit, torch.randn(5, 40, 40), k=1, progress=False)
    nan = x.clone()
    nan[2, 0, 5, 5] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        pp.top_activating(model, unit, nan, k=1, progress=False)


def test_kept_inputs_are_the_crops_of_the_top_items():
    model = _small()
    x = torch.randn(30, 3, 40, 40)
    top = pp.top_activating(model, pp.Unit("5", 1), x, k=4, batch_size=7, keep_inputs=True,
                            progress=False)  # fmt: skip
    assert top.field is not None and top.inputs is not None and top.input_unit is not None
    expected = top.field.crop(x[top.indices], top.unit.position)
    assert torch.equal(top.inputs, expected.images)
    assert top.input_unit.position == expected.unit
    on_crops = layer_output(model, "5", top.inputs)[:, 1, expected.unit[0], expected.unit[1]]
    torch.testing.assert_close(on_crops, top.values, rtol=1e-5, atol=1e-6)
    assert pp.top_activating(model, pp.Unit("5", 1), x, k=4, progress=False).inputs is None


def test_images_smaller_than_the_field_are_cropped_exactly_or_used_whole():
    model = _small()
    x = torch.randn(12, 3, 18, 18)  # the field of layer "5" is larger than the image
    cropped = pp.top_activating(model, pp.Unit("5", 1), x, k=4, keep_inputs=True, progress=False)
    whole = pp.top_activating(model, pp.Unit("5", 1), x, k=4, crop=False, progress=False)
    reference = layer_output(model, "5", x)[:, 1, 0, 0]
    for top in (cropped, whole):
        assert_same_top(top.indices, top.values, reference)


def test_the_model_runs_once_per_batch():
    # the plan comes from the traced graph and the first batch's own run: a single-batch call
    # runs the model once (0.2 ran it three times: a probe, a crop check, the batch)
    model, x = _small(), torch.randn(9, 3, 40, 40)
    runs: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(lambda _m, args: runs.append(tuple(args[0].shape)))
    try:
        for crop, seen in ((True, (9, 3, 25, 25)), (False, (9, 3, 40, 40))):
            runs.clear()
            pp.top_activating(model, pp.Unit("5", 1), x, k=2, crop=crop, progress=False)
            assert runs == [seen]
        runs.clear()
        pp.top_activating(model, pp.Unit("5", 1), x, k=2, batch_size=4, progress=False)
        assert runs == [(4, 3, 25, 25), (4, 3, 25, 25), (1, 3, 25, 25)]
        runs.clear()
        pp.scan(model, ["3", "5"], torch.randn(20, 3, 40, 40), k=10, progress=False)
        assert len(runs) == 2  # one batch, two crops (one per layer)
    finally:
        handle.remove()


def test_the_unit_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 21 §2: the public call checks the layer name once and the helpers below it trust
    # it (before: five check_layer calls for a single-batch call, one per helper on the way)
    from polyprune._graph import trace

    original, checks = trace.check_layer, []

    def counting(model: nn.Module, layer: str, name: str = "layer") -> nn.Module:
        checks.append(layer)
        return original(model, layer, name)

    users = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("polyprune") and getattr(module, "check_layer", None) is original
    ]
    assert len(users) >= 3  # trace itself, targets, receptive_field, recording, scan
    for module in users:
        monkeypatch.setattr(module, "check_layer", counting)
    model, x = _small(), torch.randn(9, 3, 40, 40)
    for crop in (True, False):
        checks.clear()
        pp.top_activating(model, pp.Unit("5", 1), x, k=2, crop=crop, progress=False)
        assert checks == ["5"], crop
    with pytest.raises(ValueError, match=r"unknown layer '55'.*closest: \['5'\]"):
        pp.top_activating(model, pp.Unit("55", 1), x, k=2, progress=False)
    assert checks[-1] == "55"


class _FixedSize(nn.Module):
    """A convolution, then a table of a fixed 16×16 size (as a hybrid conv-attention model's
    relative-position table): the model runs only on 16×16 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.table = nn.Parameter(torch.zeros(1, 4, 16, 16))
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x) + self.table)


@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("call", ["top_activating", "study"])
def test_a_model_that_does_not_run_on_the_images_is_refused_at_the_first_forward(call, crop):
    torch.manual_seed(0)
    model = _FixedSize().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.rand(2, 3, 12, 12) for _ in range(3)]
    read = []

    def data():
        for batch in batches:
            read.append(batch)
            yield batch

    run = {
        "top_activating": lambda: pp.top_activating(
            model, pp.Unit("head", 0), data(), k=2, crop=crop, progress=False
        ),
        "study": lambda: pp.study(model, pp.Unit("head", 0), data(), k=2, progress=False),
    }
    with pytest.raises(ValueError) as info:
        run[call]()
    message = str(info.value)
    assert "_FixedSize does not run on images of shape (3, 12, 12)" in message
    assert "RuntimeError: The size of tensor a (12) must match" in message
    assert "the model was built for" in message and "\n" not in message
    assert len(read) == 1  # refused on the first batch, before any other work
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert no_hooks_anywhere(model)
    # the layer before the table runs at this size: its units are read as usual
    top = pp.top_activating(model, pp.Unit("conv", 0), batches[0], k=2, progress=False)
    assert top.values.shape == (2,)
