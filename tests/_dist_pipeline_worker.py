"""Worker for tests/test_distributed_pipeline.py, launched by torchrun on every rank.

    torchrun --standalone --nproc-per-node 2 tests/_dist_pipeline_worker.py FOLDER OUTDIR

1. ``cli``: ``polyprune scan`` through :func:`polyprune.cli.main`, which initializes the process
   group itself (the process is one of torchrun's) and destroys it after; each rank's stdout is
   kept in ``cli{rank}.json``.
2. Then the worker initializes its own group (``gloo``, or ``nccl`` with the models on GPU
   ``LOCAL_RANK`` when ``POLYPRUNE_TEST_DIST_BACKEND=nccl``) and runs :data:`SCENARIOS`: scans,
   ``top_activating`` and ``study`` on every kind of data, a rank with nothing to read, and a
   failure on rank 1. Each writes ``OUTDIR/{scenario}{rank}.json``.

The fixtures (:func:`exact_net`, :func:`exact_images`, :data:`CASES`) are imported by the test
to compute the one-process references: an integer-valued network on 0/1 images, so every
activation is an exact integer and results cannot depend on how batches are composed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import polyprune as pp
from polyprune import _dist, cli, zoo

BACKEND_ENV = "POLYPRUNE_TEST_DIST_BACKEND"
LAYER = "features.6"
K = 60


def exact_net() -> nn.Module:
    """The planted network with weights rounded to integers in [-4, 4] (see the test's bound:
    on 0/1 images no partial sum reaches 2**24, so float32 holds every value exactly)."""
    model, _ = zoo.planted_network(seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p / p.abs().max() * 4))
    return model.eval()


def exact_images(n: int = 400) -> Tensor:
    images, _ = zoo.concept_images(n, size=zoo.PLANTED_SIZE, seed=1)
    return (images > 0.5).float()


def digest(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def scan_record(result: pp.results.Scan) -> dict[str, Any]:
    """What must be identical: the table, and every channel's top-k and codes."""
    tops = {}
    for unit in result.ranked():
        top = result.top(unit)
        tops[f"{unit.layer}/{unit.channel}"] = {
            "indices": top.indices.tolist(),
            "values": top.values.tolist(),
            "codes": digest(top.codes),
            "labels": result.clustering(unit).labels.tolist(),
        }
    return {"table": json.loads(json.dumps(result.table(), default=str)), "tops": tops}


def study_record(result: Any) -> dict[str, Any]:
    record = result.to_dict()
    record.pop("timings")
    record["masks"] = {
        f"{m}/{c}": {name: digest(t) for name, t in sorted((n, sub.masks[n]) for n in sub.masks)}
        for m, subs in result.subnetworks.items()
        for c, sub in subs.items()
    }
    return json.loads(json.dumps(record, default=str))


def top_record(top: Any) -> dict[str, Any]:
    return {
        "indices": top.indices.tolist(),
        "values": top.values.tolist(),
        "codes": digest(top.codes),
        "inputs": None if top.inputs is None else digest(top.inputs),
        "unit": str(top.unit),
        "input_unit": str(top.input_unit),
    }


def batches(x: Tensor, size: int) -> list[Tensor]:
    return list(torch.split(x, size))


# name -> (what runs, given the model and the images; what is recorded)
CASES: dict[str, Callable[[nn.Module, Tensor], dict[str, Any]]] = {
    # a tensor: contiguous shards of 200 items, batches of 16 (rank 1 starts mid-batch)
    "scan_tensor": lambda m, x: scan_record(
        pp.scan(m, LAYER, x, k=K, batch_size=16, progress=False)
    ),
    # an iterable of batches (round-robin by batch), two layers in one pass
    "scan_iterable": lambda m, x: scan_record(
        pp.scan(m, ["features.3", LAYER], iter(batches(x[:150], 20)), k=25, progress=False)
    ),
    # a map-style Dataset of (image,) tuples: shards through Subset
    "scan_dataset": lambda m, x: scan_record(
        pp.scan(m, LAYER, TensorDataset(x[:333]), k=40, batch_size=32, progress=False)
    ),
    # one batch: rank 1 reads nothing and still joins
    "scan_one_batch": lambda m, x: scan_record(pp.scan(m, LAYER, [x[:12]], k=10, progress=False)),
    "top_tensor": lambda m, x: top_record(
        pp.top_activating(
            m, pp.Unit(LAYER, 0), x, K, batch_size=16, keep_inputs=True, progress=False
        )
    ),
    # one image: rank 1's shard is empty
    "top_one_image": lambda m, x: top_record(
        pp.top_activating(m, pp.Unit(LAYER, 2), x[:1], 1, keep_inputs=True, progress=False)
    ),
    "study": lambda m, x: study_record(
        pp.study(
            m,
            pp.Unit(LAYER, 0),
            x,
            k=K,
            methods=["cs", "actgrad", "random"],
            config=pp.CSConfig(epochs=2),
            progress=False,
        )
    ),
}


def mismatches(model: nn.Module, x: Tensor, rank: int) -> dict[str, str | None]:
    """Each call gets an argument that differs on rank 1: its error (None: no error)."""
    calls: dict[str, Callable[[], object]] = {
        "unit": lambda: pp.top_activating(model, pp.Unit(LAYER, rank), x, 10, progress=False),
        "position": lambda: pp.top_activating(
            model, pp.Unit(LAYER, 0, position=(rank, 1)), x, 10, progress=False
        ),
        "crop": lambda: pp.top_activating(
            model, pp.Unit(LAYER, 0), x, 10, crop=rank == 0, progress=False
        ),
        "k": lambda: pp.scan(model, LAYER, x, k=20 + rank, progress=False),
        "data": lambda: pp.scan(model, LAYER, x[: 100 + rank], k=20, progress=False),
        "study": lambda: pp.study(
            model, pp.Unit(LAYER, rank), x, k=20, methods=["random"], progress=False
        ),
    }
    errors: dict[str, str | None] = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except ValueError as exc:
            errors[name] = str(exc)
    return errors


def load_example() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "scan_torchrun.py"
    spec = importlib.util.spec_from_file_location("_scan_torchrun_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(folder: str, out: Path, device: str) -> dict[str, Any]:
    """``polyprune scan`` as torchrun would run it (the group is not initialized yet)."""
    assert not dist.is_initialized()
    argv = ["scan", "--model", "zoo:planted", "--layer", LAYER, "--data", folder, "--k", "30",
            "--out", str(out / "cli"), "--quiet", "--crops", "1", "--device", device]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    return {
        "code": code,
        "stdout": stdout.getvalue(),
        "left_initialized": dist.is_initialized(),
        "kept_its_group": _dist.comm._GROUP is not None,  # released by _dist.shutdown
    }


def main() -> None:
    folder, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    backend = os.environ.get(BACKEND_ENV, "gloo")
    rank = int(os.environ["RANK"])
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    record = run_cli(folder, out, device.type)
    (out / f"cli{rank}.json").write_text(json.dumps(record))
    if backend == "nccl":
        torch.cuda.set_device(device)
    # a second group in this process: its own key prefix in torchrun's store (the CLI's group
    # left its keys there)
    size = int(os.environ["WORLD_SIZE"])
    # (TCPStore and PrefixStore: torch.distributed does not re-export them for type checkers)
    master = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    store = dist.TCPStore(*master, size, is_master=False, timeout=timedelta(seconds=60))  # type: ignore[attr-defined]
    prefixed = dist.PrefixStore("worker/", store)  # type: ignore[attr-defined]
    dist.init_process_group(
        backend, store=prefixed, rank=rank, world_size=size, timeout=timedelta(seconds=60)
    )
    try:
        model, images = exact_net().to(device), exact_images()
        for name, case in CASES.items():
            start = time.monotonic()
            result = case(model, images)
            result["seconds"] = round(time.monotonic() - start, 3)
            (out / f"{name}{rank}.json").write_text(json.dumps(result, sort_keys=True))
        # the documented example (examples/scan_torchrun.py) on both ranks
        example = load_example()
        scan, result = example.main(out / f"example{rank}")
        record = {"table": json.loads(json.dumps(scan.table())), "study": study_record(result)}
        (out / f"example_run{rank}.json").write_text(json.dumps(record, sort_keys=True))
        # reports: every rank calls save, only rank 0 writes
        pp.scan(model, LAYER, images[:100], k=20, progress=False).save(out / f"scan_report{rank}")
        # a failure on rank 1 only (NaN in its shard of a Dataset) ends both ranks with its error
        bad = images.clone()
        bad[300] = float("nan")
        start = time.monotonic()
        try:
            pp.scan(model, LAYER, TensorDataset(bad), k=K, batch_size=16, progress=False)
            error = None
        except _dist.DistributedError as exc:
            error = str(exc)
        seconds = round(time.monotonic() - start, 3)
        (out / f"failure{rank}.json").write_text(json.dumps({"error": error, "s": seconds}))
        # arguments that differ across ranks are refused on every rank, before any work
        (out / f"mismatch{rank}.json").write_text(json.dumps(mismatches(model, images, rank)))
    finally:
        _dist.shutdown()  # every rank done before any tears down; rank 0 last


if __name__ == "__main__":
    main()
