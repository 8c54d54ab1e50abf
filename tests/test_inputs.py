"""Every input a user may bring: answered correctly or refused clearly, never silently wrong."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_top, layer_output
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
)

import polyprune as pp
from polyprune import zoo


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 4, 3)
    ).eval()


X = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(1))
UNIT = pp.Unit("3", 2)


# -- gradients inside no_grad / inference_mode -------------------------------------------------


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", ["snip", "force", "actgrad", "cs"])
def test_fitting_works_inside_no_grad_and_inference_mode(context, method):
    model, members = _net(), torch.arange(24) < 12
    options = {"config": pp.CSConfig(epochs=2)} if method == "cs" else {"keep": 0.2}
    expected = pp.fit_subnetwork(model, UNIT, X, members, method, progress=False, **options)
    with context():
        got = pp.fit_subnetwork(model, UNIT, X, members, method, progress=False, **options)
    assert got.kept_fraction > 0
    assert all(torch.equal(got.masks[n], expected.masks[n]) for n in expected.masks)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_visualize_works_inside_no_grad_and_inference_mode(context):
    model = _net()
    expected = pp.visualize(model, UNIT, size=16, steps=3, progress=False)
    with context():
        got = pp.visualize(model, UNIT, size=16, steps=3, progress=False)
    assert torch.equal(got, expected)


def test_all_zero_scores_warn_that_the_subnetwork_is_arbitrary():
    model = _net()
    with torch.no_grad():
        model.get_parameter("3.weight")[2].zero_()  # unit 2 is dead: no weight matters to it
    with pytest.warns(UserWarning, match="every score .* is 0"):
        pp.fit_subnetwork(model, UNIT, X, torch.arange(24) < 12, "snip", keep=0.2)


# -- the images: batches, lists, loaders, sizes, dtypes --------------------------------------


def test_a_list_of_batches_is_a_list_of_batches():
    model = _net()
    reference = layer_output(model, "3", X)[:, 2, 2, 2]
    for data in (list(X.split(8)), [(b, 0) for b in X.split(8)], list(X), iter(X.split(5))):
        top = pp.top_activating(model, UNIT, data, k=5, progress=False)
        assert_same_top(top.indices, top.values, reference)
    with pytest.raises(ValueError, match=r"k=30 is larger than the data set \(24 items\)"):
        pp.top_activating(model, UNIT, list(X.split(8)), k=30, progress=False)


def test_a_data_loader_in_dataset_order_gives_dataset_indices():
    ds = TensorDataset(X)
    expected = pp.top_activating(_net(), UNIT, ds, k=5, progress=False)
    for loader in (
        DataLoader(ds, batch_size=8),
        DataLoader(ds, batch_size=5, sampler=SequentialSampler(ds)),
        DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 7, drop_last=False)),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            top = pp.top_activating(_net(), UNIT, loader, k=5, progress=False)
        assert torch.equal(top.indices, expected.indices)


class _Backwards(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"shuffle": True}, "it shuffles"),
        # issue 20: indices came back as loader positions ([36, 44, …] for [118, 98, …])
        ({"sampler": SubsetRandomSampler(range(60, 120))}, r"its sampler \(SubsetRandomSampler"),
        ({"sampler": _Backwards(180)}, r"its sampler \(_Backwards\)"),
        ({"batch_sampler": [[0, 1], [5, 4]], "batch_size": 1}, r"its batch_sampler \(list\)"),
    ],
)
def test_a_data_loader_out_of_dataset_order_is_refused(options, problem):
    ds = TensorDataset(torch.rand(180, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    if "batch_sampler" in options:
        options = {"batch_sampler": options["batch_sampler"]}
    else:
        options = {"batch_size": 8, **options}
    with pytest.raises(ValueError, match=rf"data is a DataLoader .* in order \({problem}"):
        pp.top_activating(_net(), UNIT, DataLoader(ds, **options), k=3, progress=False)
    with pytest.raises(ValueError, match="Subset"):
        pp.scan(_net(), "3", DataLoader(ds, **options), k=10, progress=False)


@pytest.mark.parametrize("crop", [True, False])
def test_mixed_image_sizes_are_refused(crop):
    data = [X[:8], torch.rand(8, 3, 20, 20)]
    with pytest.raises(
        ValueError, match=r"mixes image shapes: \(3, 20, 20\) .* after \(3, 16, 16\)"
    ):
        pp.top_activating(_net(), UNIT, data, k=3, crop=crop, progress=False)


class Sized16(nn.Module):
    """A valid model for 16×16 images only: a Linear sized for them, and a functional conv."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 14 * 14, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(F.conv2d(x, self.kernel)).flatten(1))


def test_validation_uses_the_users_images_not_a_hidden_224_image():
    model = Sized16().eval()
    assert pp.Unit("fc", 4).validate(model) is not None  # no forward needed
    assert pp.Unit("relu", 3).validate(model, X) is not None
    with pytest.raises(ValueError, match=r"channel 4 is out of range for 'relu'.*4 channels"):
        pp.Unit("relu", 4).validate(model, X)
    top = pp.top_activating(model, pp.Unit("fc", 4), X, k=3, progress=False)
    assert_same_top(top.indices, top.values, layer_output(model, "fc", X)[:, 4])


def test_layers_that_are_neither_maps_nor_vectors_are_refused_up_front():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.mix = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mix(self.embed(x).flatten(2).transpose(1, 2))  # (N, 16 tokens, 8)

    model = Tokens().eval()
    for call in (
        lambda: pp.top_activating(model, pp.Unit("mix", 0), X, k=2, crop=False, progress=False),
        lambda: pp.fit_subnetwork(
            model, pp.Unit("mix", 0), X, torch.arange(24) < 4, "snip", keep=0.5
        ),
        lambda: pp.Unit("mix", 0).validate(model, X),
    ):
        with pytest.raises(ValueError, match=r"outputs shape \(1, 16, 8\).*sequence of tokens"):
            call()


@pytest.mark.parametrize(
    ("model_dtype", "image_dtype"),
    [(torch.float64, torch.float32), (torch.float32, torch.float64), (torch.float32, torch.half),
     (torch.float32, torch.bfloat16)],
)  # fmt: skip
def test_images_follow_the_models_dtype(model_dtype, image_dtype):
    model = _net().to(model_dtype)
    x = X.to(image_dtype)
    reference = layer_output(model, "3", x.to(model_dtype))[:, 2, 2, 2]
    top = pp.top_activating(model, UNIT, x, k=4, progress=False)
    assert_same_top(top.indices, top.values.to(torch.float64), reference.double(), rtol=1e-4)
    records = pp.ActivationRecorder(model, "3").run(x)["3"]
    assert records.dtype == model_dtype
    result = pp.study(model, UNIT, x, k=12, methods=("snip",), progress=False)
    assert len(result.top) == 12


ONE_LAYER = pp.Masks({"0.weight": torch.ones(6, 3, dtype=torch.bool)}, "kernel")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_images_are_refused_with_a_hint_to_convert(dtype):
    x = (X * 255).to(dtype)
    calls = [
        lambda: pp.top_activating(_net(), UNIT, x, k=2, progress=False),
        lambda: pp.ActivationRecorder(_net(), "3").run(x),
        lambda: pp.study(_net(), UNIT, x, k=4, progress=False),
        lambda: pp.fit_subnetwork(_net(), UNIT, x, torch.arange(24) < 3, "snip", keep=0.5),
        lambda: pp.evaluate(
            _net(),
            UNIT,
            x,
            torch.arange(24) % 2,
            {0: pp.Masks({"0.weight": torch.ones(6, 3, dtype=torch.bool)}, "kernel")},
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"must be floating point, got {dtype}"):
            call()
    if dtype == torch.uint8:
        with pytest.raises(ValueError, match=r"convert with images.float\(\) / 255"):
            calls[0]()


def test_evaluate_refuses_nan_images():
    masks = {0: pp.Masks({"0.weight": torch.ones(6, 3, dtype=torch.bool)}, "kernel")}
    bad = X.clone()
    bad[3, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        pp.evaluate(_net(), UNIT, bad, torch.arange(24) % 2, masks)
    with pytest.raises(ValueError, match="held_out images contains NaN"):
        pp.evaluate(_net(), UNIT, X, torch.arange(24) % 2, masks, held_out=(bad, torch.zeros(24)))


# -- dead units and degenerate subnetworks -----------------------------------------------------


def test_a_dead_unit_is_flagged_and_not_called_polysemantic():
    model, _ = zoo.planted_network()
    with torch.no_grad():
        model.get_parameter("features.6.weight")[0].zero_()  # the planted unit: 0 on every image
    images, _ = zoo.concept_images(200, size=zoo.PLANTED_SIZE, seed=4)
    with pytest.warns(UserWarning, match="is dead and constant .* nothing is fitted"):
        result = pp.study(model, pp.Unit(*zoo.PLANTED_TARGET), images, k=40, progress=False)
    assert result.flags == ["dead", "constant"] and not result.is_polysemantic
    assert result.subnetworks == {}
    assert "the unit is dead and constant, max 0: nothing fitted" in result.summary()


def test_study_and_scan_flag_a_dead_unit_alike():
    # issue 20: never positive but not constant (the conv feeds a ReLU): scan said dead, study
    # clustered its negative values into two clusters, called it polysemantic and fitted them
    model, _ = zoo.planted_network()
    with torch.no_grad():
        model.get_parameter("features.6.weight")[0] = (
            -model.get_parameter("features.6.weight")[0].abs() - 0.1
        )
    images, _ = zoo.concept_images(200, size=zoo.PLANTED_SIZE, seed=4)
    scanned = pp.scan(model, "features.6", images, k=40, progress=False)
    with pytest.warns(UserWarning, match=r"features\.6\[0\] is dead \(max -.*dead: never positive"):
        result = pp.study(
            model, pp.Unit("features.6", 0), images, top=scanned.top(0, images),
            methods=["snip"], progress=False,
        )  # fmt: skip
    assert result.clustering.n_clusters >= 2  # the codes do cluster: only the rule says no
    row = next(r for r in scanned.table() if r["channel"] == 0)
    assert result.flags == row["flags"] == ["dead"]
    assert not result.is_polysemantic and not row["polysemantic"] and result.subnetworks == {}
    assert "the unit is dead, max -" in result.summary()


def test_empty_and_constant_subnetworks_are_flagged():
    model, members = _net(), torch.arange(24) % 2
    empty = pp.Masks({"0.weight": torch.zeros(6, 3, dtype=torch.bool),
                      "3.weight": torch.zeros(4, 6, dtype=torch.bool)}, "kernel")  # fmt: skip
    full = pp.Masks({"0.weight": torch.ones(6, 3, dtype=torch.bool),
                     "3.weight": torch.ones(4, 6, dtype=torch.bool)}, "kernel")  # fmt: skip
    ev = pp.evaluate(model, UNIT, X, members, {0: empty, 1: full})
    assert ev.clusters[0].flags == ("empty", "constant")
    assert ev.clusters[1].flags == ()


# -- masks files, keep=1 -----------------------------------------------------------------------


def test_loading_a_bad_masks_file_names_the_file(tmp_path):
    good = tmp_path / "good.pt"
    pp.Masks({"0.weight": torch.ones(6, 3, dtype=torch.bool)}, "kernel").save(good)
    empty, truncated, foreign, damaged = (tmp_path / n for n in ("e", "t", "f", "d"))
    empty.write_bytes(b"")
    truncated.write_bytes(good.read_bytes()[:100])
    torch.save({"weights": torch.ones(3)}, foreign)
    torch.save({"format": "polyprune.masks/1", "masks": {}}, damaged)
    for path, match in ((empty, "not a readable"), (truncated, "not a readable"),
                        (foreign, "not a polyprune masks file"), (damaged, "damaged")):  # fmt: skip
        with pytest.raises(ValueError, match=match) as info:
            pp.Masks.load(path)
        assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="no masks file"):
        pp.Masks.load(tmp_path / "missing.pt")


def test_keep_one_keeps_everything_without_a_warning():
    model = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sub = pp.fit_subnetwork(model, UNIT, X, torch.arange(24) < 12, "snip", keep=1.0)
    assert sub.kept_fraction == 1.0


def test_take_reads_items_by_index_and_names_what_is_wrong():
    from polyprune._data import take

    x = torch.arange(5 * 3 * 2 * 2, dtype=torch.float32).reshape(5, 3, 2, 2)
    indices = torch.tensor([4, 0])
    assert torch.equal(take(x, indices), x[[4, 0]])
    assert torch.equal(take(TensorDataset(x, torch.zeros(5)), indices), x[[4, 0]])
    too_few = r"data has 5 items, fewer than the indices need \(5\)"
    for data in (x, TensorDataset(x)):
        with pytest.raises(ValueError, match=too_few):
            take(data, torch.tensor([1, 5]))
    with pytest.raises(TypeError, match="DataLoader or an iterable can only be streamed"):
        take(DataLoader(TensorDataset(x)), indices)
