"""Fuzzing every ``from_dict`` and ``load`` (issue 20 §5): random, truncated and structurally
wrong dicts and files give one ``ValueError`` (naming the class for ``from_dict``, the file for
``load``), never a ``KeyError``/``AttributeError``/``TypeError`` from inside polyprune."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import polyprune as pp

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
UNIT = pp.Unit("2", 1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()


@functools.cache
def _images() -> torch.Tensor:
    return torch.rand(24, 3, 10, 10, generator=torch.Generator().manual_seed(0))


@functools.cache
def _subnetwork() -> pp.results.Subnetwork:
    members = torch.arange(24) % 2 == 0
    return pp.fit_subnetwork(
        _net(), UNIT, _images(), members, "magnitude", keep=0.5, progress=False
    )


@functools.cache
def _valid_dicts() -> dict[str, tuple[Callable[[Any], Any], dict[str, Any]]]:
    """``{class name: (from_dict, a valid dict of it)}``."""
    top = pp.top_activating(_net(), UNIT, _images(), k=12, progress=False)
    sub = _subnetwork()
    evaluation = pp.evaluate(_net(), UNIT, _images(), torch.arange(24) % 2, {0: sub.masks})
    field = pp.ReceptiveField.of(_net(), "2", 10)
    found: dict[str, tuple[Callable[[Any], Any], dict[str, Any]]] = {
        "Unit": (pp.Unit.from_dict, UNIT.to_dict()),
        "Subnetwork": (pp.results.Subnetwork.from_dict, sub.to_dict()),
        "Masks": (pp.Masks.from_dict, sub.masks.to_dict()),
        "TopActivations": (pp.results.TopActivations.from_dict, top.to_dict()),
        "ReceptiveField": (pp.ReceptiveField.from_dict, field.to_dict()),
        "Clustering": (
            pp.results.Clustering.from_dict,
            pp.cluster(top.codes.repeat(2, 1) + torch.arange(24.0)[:, None]).to_dict(),
        ),
        "Evaluation": (pp.results.Evaluation.from_dict, evaluation.to_dict()),
        "CSConfig": (pp.CSConfig.from_dict, pp.CSConfig().to_dict()),
    }
    return found


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(torch.zeros(0)),
    st.just(torch.full((2, 2), float("nan"))),
)


CLASSES = ["Unit", "Subnetwork", "Masks", "TopActivations", "ReceptiveField", "Clustering",
           "Evaluation", "CSConfig"]  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES)
@SETTINGS
@given(data=st.data())
def test_from_dict_of_a_damaged_dict_is_one_value_error(cls: str, data: Any) -> None:
    from_dict, good = _valid_dicts()[cls]
    damaged = dict(good)
    keys = sorted(damaged)
    how = data.draw(st.sampled_from(["drop", "replace", "random"]))
    if how == "random":
        damaged = data.draw(st.dictionaries(st.text(max_size=4), JUNK, max_size=4))
    elif keys:
        key = data.draw(st.sampled_from(keys))
        if how == "drop":
            del damaged[key]
        else:
            damaged[key] = data.draw(JUNK)
    try:
        from_dict(damaged)
    except ValueError as exc:
        assert cls in str(exc) or "from_dict" in str(exc) or cls.lower() in str(exc).lower()
    # a damaged dict may still be a valid one (a dropped optional field): then no error


@functools.cache
def _saved_files() -> dict[str, tuple[Callable[[Path], Any], Path]]:
    """``{what: (load, a file polyprune saved)}``."""
    root = Path(tempfile.mkdtemp())
    sub = _subnetwork()
    sub.save(root / "sub.pt")
    sub.masks.save(root / "masks.pt")
    return {
        "subnetwork": (pp.results.Subnetwork.load, root / "sub.pt"),
        "masks": (pp.Masks.load, root / "masks.pt"),
    }


@pytest.mark.parametrize("what", ["subnetwork", "masks"])
@SETTINGS
@given(cut=st.floats(0.0, 0.999), noise=st.binary(max_size=64))
def test_load_of_a_damaged_file_is_one_value_error_naming_it(
    what: str, cut: float, noise: bytes, tmp_path: Path
) -> None:
    load, good = _saved_files()[what]
    raw = good.read_bytes()
    path = tmp_path / f"damaged-{os.getpid()}.pt"
    path.write_bytes(raw[: int(len(raw) * cut)] + noise)
    try:
        loaded = load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:  # zip readers skip trailing bytes: what loads must be what was saved
        assert loaded.to_dict().keys() == load(good).to_dict().keys()


@pytest.mark.parametrize("what", ["subnetwork", "masks"])
def test_load_of_a_directory_or_missing_file(what: str, tmp_path: Path) -> None:
    load, _ = _saved_files()[what]
    with pytest.raises((ValueError, OSError)) as info:
        load(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pt")


def test_masks_save_to_a_directory_or_under_a_missing_parent_is_a_clear_error(
    tmp_path: Path,
) -> None:
    masks = _subnetwork().masks
    with pytest.raises((ValueError, OSError)) as info:
        masks.save(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises((ValueError, OSError)) as info:
        masks.save(tmp_path / "missing" / "m.pt")
    assert "missing" in str(info.value)


@functools.cache
def _saved_results() -> dict[str, tuple[Callable[[Path], Any], Path]]:
    """``{what: (load, a directory polyprune saved)}``."""
    root = Path(tempfile.mkdtemp())
    net = _net()
    study = pp.study(net, UNIT, _images(), k=12, methods=["magnitude"], keep=0.5, progress=False,
                     min_cluster_size=2)  # fmt: skip
    study.save(root / "study", crops_per_cluster=0)
    scan = pp.scan(net, "2", _images(), k=12, min_cluster_size=2, progress=False)
    scan.save(root / "scan", crops=0)
    return {
        "study": (pp.results.StudyResult.load, root / "study"),
        "scan": (pp.results.Scan.load, root / "scan"),
    }


@pytest.mark.parametrize("what", ["study", "scan"])
@SETTINGS
@given(data=st.data())
def test_load_of_a_damaged_result_is_one_value_error_naming_the_file(
    what: str, data: Any, tmp_path: Path
) -> None:
    load, good = _saved_results()[what]
    copy = Path(tempfile.mkdtemp(dir=tmp_path))
    for f in good.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    targets = sorted(f.name for f in copy.iterdir() if f.suffix in (".pt", ".json"))
    name = data.draw(st.sampled_from(targets))
    raw = (copy / name).read_bytes()
    cut = data.draw(st.floats(0.0, 0.999))
    (copy / name).write_bytes(raw[: int(len(raw) * cut)] + data.draw(st.binary(max_size=16)))
    try:
        load(copy)
    except ValueError as exc:
        assert name in str(exc) or str(copy) in str(exc), str(exc)


def test_a_scan_with_no_tops_is_refused(tmp_path: Path) -> None:
    _, good = _saved_results()["scan"]
    state = torch.load(good / "scan.pt", weights_only=True)
    state["tops"] = {}
    copy = tmp_path / "scan"
    copy.mkdir()
    for f in good.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    torch.save(state, copy / "scan.pt")
    with pytest.raises(ValueError, match=r"scan\.pt"):
        pp.results.Scan.load(copy)
