"""scan, top_activating, study and the CLI on two real processes (torchrun, gloo on CPU; nccl
too where two GPUs exist), compared with one process.

One launch runs everything (``tests/_dist_pipeline_worker.py``): ``polyprune scan`` through the
CLI (which initializes the process group itself), then scans of a tensor, an iterable, a
Dataset and a single batch (rank 1 reads nothing), ``top_activating`` (also with an empty
shard), ``study`` with CS and two scorers, reports written on rank 0 only, and a failure on
rank 1 that must end both ranks with its error.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import BACKENDS, load_script, torchrun

import polyprune as pp
from polyprune import zoo
from polyprune.cli import image_data

worker = load_script("tests/_dist_pipeline_worker.py")

LAUNCH_TIMEOUT = 240  # seconds: a hang, not a slow machine (the launch takes ~20-40 s here)


def launch(folder: Path, out: Path, backend: str) -> tuple[int, str, float]:
    env = {"POLYPRUNE_DIST_TIMEOUT": "120", worker.BACKEND_ENV: backend}
    return torchrun("_dist_pipeline_worker.py", [str(folder), str(out)], env, LAUNCH_TIMEOUT)


def both(out: Path, name: str, log: str) -> dict[str, Any]:
    """The scenario's result, which must be identical on both ranks."""
    paths = [out / f"{name}{rank}.json" for rank in range(2)]
    missing = [p.name for p in paths if not p.exists()]
    assert not missing, f"{missing} not written; torchrun said:\n{log[-4000:]}"
    parts = [json.loads(p.read_text()) for p in paths]
    for p in parts:
        p.pop("seconds", None)
    assert parts[0] == parts[1], f"{name}: the ranks returned different results"
    return parts[0]


def test_the_fixture_is_exact() -> None:
    """No partial sum of the integer network reaches 2**24 on 0/1 images: with |w| and |x| every
    partial sum is bounded by the |w|-network's output, so float32 holds all values exactly."""
    bound = copy.deepcopy(worker.exact_net())
    with torch.no_grad():
        for p in bound.parameters():
            p.abs_()
        assert float(bound(worker.exact_images()).max()) < 2**24


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_equal_one(backend: str, tmp_path: Path) -> None:
    folder = zoo.write_image_folder(tmp_path / "images", 10, size=zoo.PLANTED_SIZE, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    code, log, _ = launch(folder, out, backend)
    assert code == 0, f"torchrun failed:\n{log[-4000:]}"

    model, images = worker.exact_net(), worker.exact_images()
    for name, case in worker.CASES.items():  # identical on both ranks, and equal to one process
        assert both(out, name, log) == json.loads(json.dumps(case(model, images))), name

    # the CLI: exit 0 on both ranks, the group set up and torn down, output on rank 0 only
    cli = [json.loads((out / f"cli{r}.json").read_text()) for r in range(2)]
    assert [c["code"] for c in cli] == [0, 0]
    assert not any(c["left_initialized"] or c["kept_its_group"] for c in cli)
    assert "features.6[" in cli[0]["stdout"] and cli[1]["stdout"] == ""
    written = pp.results.Scan.load(out / "cli")
    data = image_data(str(folder), 32, False, 3)
    alone = pp.scan(zoo.planted_network()[0], "features.6", data, k=30, progress=False)
    for unit in alone.ranked():  # float model: equal up to rounding (helpers.assert_same_top)
        got, want = written.top(unit), alone.top(unit)
        torch.testing.assert_close(got.values, want.values, rtol=1e-5, atol=1e-6)
    assert (out / "cli" / "report.html").exists() and (out / "cli" / "crops_features.6_0.png")

    # the example: identical on both ranks, reports on rank 0 only; one process gets the same
    # clusters and ranks (a float network: values compared up to rounding by the table's order)
    run = both(out, "example_run", log)
    alone_scan, alone_study = worker.load_example().main(tmp_path / "alone")
    assert [(r["channel"], r["clusters"]) for r in run["table"]] == [
        (r["channel"], r["clusters"]) for r in alone_scan.table()
    ]
    assert run["study"]["clustering"]["labels"] == alone_study.clustering.labels.tolist()
    assert (out / "example0" / "study" / "report.html").exists()
    assert not (out / "example1").exists()

    # reports: rank 0 writes, rank 1 does not
    assert (out / "scan_report0" / "report.html").exists()
    assert not (out / "scan_report1").exists()

    # a failure on rank 1 ends both ranks with its error
    failure = [json.loads((out / f"failure{r}.json").read_text()) for r in range(2)]
    for f in failure:
        assert f["error"] and f["error"].startswith("rank 1 failed in scan: ValueError"), f
        assert "NaN" in f["error"]

    # an argument that differs on one rank is refused on both (a different unit was merged
    # into one top-k that mixed channels; only a different k was caught)
    mismatch = both(out, "mismatch", log)
    expected = {
        "unit": (
            "top_activating",
            r"unit: rank 0 Unit\(layer='features.6', channel=0, .*channel=1",
        ),
        "position": ("top_activating", r"unit: rank 0 .*position=\(0, 1\)\), rank 1 .*\(1, 1\)"),
        "crop": ("top_activating", "crop: rank 0 True, rank 1 False"),
        "k": ("scan", "k: rank 0 20, rank 1 21"),
        "data": ("scan", r"data: rank 0 \(100, 3, 32, 32\), rank 1 \(101, 3, 32, 32\)"),
        "study": ("study", r"unit: rank 0 Unit\(.*channel=0.*rank 1 Unit\(.*channel=1"),
    }
    for name, (what, differs) in expected.items():
        error = mismatch[name]
        assert error and error.startswith(f"{what} was called with arguments that differ"), error
        assert re.search(differs, error), (name, error)
