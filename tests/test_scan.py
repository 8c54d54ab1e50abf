"""pp.scan: one pass over the data for every channel of whole layers, equal to top_activating +
cluster channel by channel; the ranking finds the known polysemantic units; reports; the CLI."""

from __future__ import annotations

import copy
import json
import runpy
import sys
from typing import Any

import numpy as np
import pytest
import torch
from helpers import load_script, no_hooks_anywhere
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import polyprune as pp
from polyprune import zoo
from polyprune._provenance import model_description
from polyprune._topk import TopK
from polyprune.cli import main

exact = load_script("tests/_dist_pipeline_worker.py")  # the integer-valued planted network


@pytest.fixture(scope="module")
def planted() -> tuple[nn.Module, torch.Tensor]:
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(400, size=zoo.PLANTED_SIZE, seed=1)
    return model, images


@given(
    st.integers(1, 60),
    st.integers(1, 4),
    st.integers(1, 12),
    st.integers(1, 9),
    st.integers(0, 99),
    st.booleans(),
)
def test_topk_is_the_one_process_tie_rule(n: int, c: int, k: int, batch: int, seed: int, one: bool):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 3, (n, c), generator=g).float()  # few values: many exact ties
    inputs = torch.arange(n)[:, None].expand(n, 2) * 10  # a payload that names its item
    channels = [int(torch.randint(0, c, (), generator=g))] if one else None  # a unit, or all
    state = TopK(k, channels)
    for start in range(0, n, batch):
        state.push(codes[start : start + batch], offset=start, inputs=inputs[start : start + batch])
        assert state._pending_rows == 0  # inputs are merged at once: memory O(k + batch)
    top = state.result()
    assert top is not None
    for row, ch in enumerate(channels or range(c)):
        expected = sorted(range(n), key=lambda i: (-float(codes[i, ch]), i))[:k]
        assert top.indices[row].tolist() == expected
        assert torch.equal(top.payload("codes")[row], codes[expected])
        assert torch.equal(top.payload("inputs")[row], inputs[expected])
    assert top.indices.shape[0] == (1 if one else c)


def test_scan_equals_top_activating_and_cluster_per_channel(planted):
    model, images = planted[0], planted[1][:250]
    result = pp.scan(model, "features.6", images, k=50, batch_size=32, progress=False)
    for channel in range(5):  # same batches, same process: bit for bit
        unit = pp.Unit("features.6", channel)
        ref = pp.top_activating(
            model, unit, images, 50, batch_size=32, keep_inputs=True, progress=False
        )
        got = result.top(channel, images)
        for name in ("indices", "values", "codes", "inputs"):
            assert torch.equal(getattr(got, name), getattr(ref, name)), name
        assert (got.unit, got.input_unit, got.field) == (ref.unit, ref.input_unit, ref.field)
        assert np.array_equal(result.clustering(channel).labels, pp.cluster(ref.codes).labels)
    # other batch sizes (and the threshold path of the running top-k): exact integer activations
    net, x = exact.exact_net(), exact.exact_images(200)
    other = pp.scan(net, "features.6", x, k=30, batch_size=7, progress=False)
    for channel in range(5):
        ref = pp.top_activating(net, pp.Unit("features.6", channel), x, 30, progress=False)
        assert torch.equal(other.top(channel).indices, ref.indices)
        assert torch.equal(other.top(channel).codes, ref.codes)


def test_several_layers_in_one_pass(planted):
    model, images = planted
    one_shot = (b for b in torch.split(images[:200], 50))  # a generator can be read only once
    both = pp.scan(model, ["features.3", "features.6"], one_shot, k=20, progress=False)
    assert len(both) == 32 + 5
    for layer in ("features.3", "features.6"):
        alone = pp.scan(model, layer, images[:200], k=20, progress=False)
        for unit in alone.ranked():
            assert torch.equal(both.top(unit).indices, alone.top(unit).indices)
            assert torch.equal(both.top(unit).codes, alone.top(unit).codes)
        rows = [r for r in both.table() if r["layer"] == layer]
        assert [r["channel"] for r in rows] == [r["channel"] for r in alone.table()]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_planted_unit_ranks_first(seed):
    model, _ = zoo.planted_network(seed=seed)
    images, _ = zoo.concept_images(1500, size=zoo.PLANTED_SIZE, seed=1)
    result = pp.scan(model, "features.6", images, k=300, progress=False)
    assert (result.ranked()[0].layer, result.ranked()[0].channel) == zoo.PLANTED_TARGET


@pytest.mark.parametrize("name", zoo.available())
def test_the_trained_models_unit_ranks_in_the_top_three(name):
    layer, channel = zoo.model_card(name).unit
    images, _ = zoo.demo_data(name)
    result = pp.scan(zoo.load(name), layer, images, k=100, progress=False)
    assert (layer, channel) in [(u.layer, u.channel) for u in result.ranked()[:3]]


def test_save_load_and_report(planted, tmp_path):
    model, images = planted
    result = pp.scan(model, "features.6", images, k=40, progress=False)
    report = result.save(tmp_path / "scan", images, crops=2)
    assert report == tmp_path / "scan" / "report.html"
    files = {p.name for p in (tmp_path / "scan").iterdir()}
    assert {"scan.csv", "scan.json", "scan.pt", "scores.png", "report.html"} <= files
    poly = result.ranked(polysemantic=True)
    assert sum(name.startswith("crops_") for name in files) == min(2, len(poly)) > 0
    table = json.loads((tmp_path / "scan" / "scan.json").read_text())["table"]
    assert [r["channel"] for r in table] == [u.channel for u in result.ranked()]
    header = (tmp_path / "scan" / "scan.csv").read_text().splitlines()[0]
    assert header.startswith("rank,layer,channel,position,clusters,sizes,noise,separation")
    back = pp.results.Scan.load(tmp_path / "scan")
    assert back.table() == result.table() and back.timings == result.timings
    assert back.provenance == result.provenance
    assert result.provenance["model"] == model_description(model)
    assert result.provenance["data"]["images"] == len(images)
    assert result.provenance["started"] <= result.provenance["finished"]
    assert back.top(3).field == result.top(3).field is not None
    top, again = result.top(3, images), back.top(3, images)
    for name in ("indices", "values", "codes", "inputs"):
        assert torch.equal(getattr(top, name), getattr(again, name))
    assert np.array_equal(back.clustering(3).labels, result.clustering(3).labels)
    with pytest.raises(FileNotFoundError, match="holds no saved scan"):
        pp.results.Scan.load(tmp_path)
    pt = tmp_path / "scan" / "scan.pt"
    pt.write_bytes(pt.read_bytes()[:100])  # truncated: one clear error naming the file
    with pytest.raises(ValueError, match=r"scan\.pt' is not a readable polyprune scan: \w+"):
        pp.results.Scan.load(tmp_path / "scan")


def test_a_failed_save_leaves_the_earlier_scan_whole(planted, tmp_path, monkeypatch):
    model, images = planted
    first = pp.scan(model, "features.6", images, k=40, progress=False)
    first.save(tmp_path / "scan")
    before = {p.name: p.read_bytes() for p in (tmp_path / "scan").iterdir()}
    second = pp.scan(model, "features.6", images, k=30, progress=False)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pp.plot, "crops", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        second.save(tmp_path / "scan", images, crops=1, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "scan").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["scan"]  # no temporary folder left


def test_study_starts_from_a_scan(planted):
    model, images = planted
    unit = pp.Unit("features.6", 0)
    top = pp.scan(model, "features.6", images, k=60, progress=False).top(0, images)
    settings: dict[str, Any] = {"k": 60, "methods": ["actgrad"], "progress": False}
    given_top = pp.study(model, unit, images, top=top, **settings).to_dict()
    own = pp.study(model, unit, images, **settings).to_dict()
    for d in (given_top, own):
        d.pop("timings")
    assert given_top == own
    with pytest.raises(ValueError, match="holds no inputs"):
        pp.study(
            model,
            unit,
            images,
            top=pp.scan(model, "features.6", images, k=60, progress=False).top(0),
            **settings,
        )
    with pytest.raises(ValueError, match=r"top belongs to features\.6\[0\], not to"):
        pp.study(model, pp.Unit("features.6", 1), images, top=top, **settings)


def test_dead_and_constant_channels_rank_last():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    with torch.no_grad():
        net.get_parameter("0.weight").zero_()
        net.get_parameter("0.weight")[2:, 0, 1, 1] = torch.tensor([1.0, -1.0])
        net.get_parameter("0.bias").copy_(torch.tensor([-1.0, 2.0, 0.0, 0.0]))
    x = torch.cat([torch.zeros(20, 1, 5, 5), torch.ones(20, 1, 5, 5)])
    table = {r["channel"]: r for r in pp.scan(net, "0", x, k=30, progress=False).table()}
    assert table[0]["flags"] == ["dead", "constant"] and table[1]["flags"] == ["constant"]
    assert table[3]["flags"] == ["dead"] and table[2]["flags"] == []
    assert table[2]["rank"] == 1 and {table[c]["rank"] for c in (0, 1, 3)} == {2, 3, 4}
    assert table[2]["mean"] == 0.5 and table[2]["max"] == 1.0 and table[3]["max"] == 0.0


def test_model_left_as_found(planted):
    model = copy.deepcopy(planted[0]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pp.scan(model, "features.6", planted[1][:100], k=20, progress=False)
    assert model.training and all(m.training for m in model.modules()) and no_hooks_anywhere(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_whole_images_where_no_field_can_be_derived():
    class Branchy(nn.Module):  # data-dependent control flow: cannot be traced
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x if x.sum() > 0 else -x)

    torch.manual_seed(0)
    model, x = Branchy().eval(), torch.rand(30, 3, 9, 9)
    with pytest.warns(UserWarning, match="whole images are used"):
        result = pp.scan(model, "conv", x, k=10, progress=False)
    assert result.top(0).field is None
    ref = pp.top_activating(model, pp.Unit("conv", 1), x, 10, crop=False, progress=False)
    assert torch.equal(result.top(1).indices, ref.indices)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layers": "features.66"}, ValueError, "unknown layer 'features.66'"),
        ({"layers": ["features.6", "features.6"]}, ValueError, "duplicates"),
        ({"layers": []}, ValueError, "at least one module"),
        ({"k": 5}, ValueError, r"k must be an int ≥ 10"),
        ({"k": 500}, ValueError, r"k=500 is larger than the data set \(400 items\)"),
        ({"min_cluster_size": 1}, ValueError, r"min_cluster_size must be an int in \[2, "),
        ({"cluster_options": {"eps": 1}}, ValueError, r"unknown cluster_options \['eps'\]"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int ≥ 1"),
        ({"data": "images/"}, TypeError, "data must be a tensor"),
    ],
)
def test_bad_arguments_fail_before_any_work(planted, kwargs, error, message):
    model, images = planted
    args = {"layers": "features.6", "data": images, "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        pp.scan(model, args.pop("layers"), args.pop("data"), **args)


def test_bad_channels_and_data_for_top(planted):
    model, images = planted
    result = pp.scan(model, ["features.3", "features.6"], images[:60], k=20, progress=False)
    with pytest.raises(ValueError, match="name the channel as a Unit"):
        result.top(0)
    with pytest.raises(
        ValueError, match=r"unit's channel must be an int in \[0, 4\] \(layer 'features.6'\), got 5"
    ):
        result.top(("features.6", 5))
    with pytest.raises(ValueError, match=r"'features\.0' was not scanned"):
        result.top(pp.Unit("features.0", 0))
    with pytest.raises(TypeError, match="must be indexable"):
        result.top(("features.6", 0), DataLoader(TensorDataset(images[:60])))
    assert result.top(("features.6", 0), TensorDataset(images[:60])).inputs is not None


def test_command_line(tmp_path, capsys, monkeypatch):
    folder = zoo.write_image_folder(tmp_path / "images", 10, size=32, seed=3)
    out = tmp_path / "scan"
    code = main(
        [
            "scan",
            "--model",
            "zoo:planted",
            "--layer",
            "features.6",
            "--data",
            str(folder),
            "--k",
            "30",
            "--out",
            str(out),
            "--quiet",
            "--crops",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "features.6[" in printed and f"report: {out / 'report.html'}" in printed
    assert len(pp.results.Scan.load(out)) == 5
    assert (
        main(
            [
                "scan",
                "--model",
                "zoo:planted",
                "--layer",
                "features.66",
                "--data",
                str(folder),
                "--k",
                "30",
            ]
        )
        == 2
    )
    assert "polyprune: error: unknown layer 'features.66'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # python -m polyprune scan --help
        monkeypatch.setattr(sys, "argv", ["polyprune", "scan", "--help"])
        runpy.run_module("polyprune", run_name="__main__")
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert "--layer" in usage and "--device" in usage
