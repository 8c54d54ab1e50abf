"""Helpers the tests import (``from helpers import ...``): independent references (a plain
forward hook's layer output, a top-k check up to rounding), model snapshots, scripts loaded as
modules, two-rank torchrun, crop checks, plugins. Fixtures and pytest hooks stay in
``conftest.py``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TypedDict

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

import polyprune as pp


class _Done(Exception):
    pass


def layer_output(model: nn.Module, layer: str, x: Tensor) -> Tensor:
    """The output of ``layer``, computed independently of polyprune (a plain forward hook)."""
    out: list[Tensor] = []

    def hook(module: nn.Module, args: object, output: Tensor) -> None:
        out.append(output.detach().clone())
        raise _Done

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except _Done:
        pass
    finally:
        handle.remove()
    return out[0]


def no_hooks_anywhere(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """Import a script of the repository (``examples/y.py``, ``docs/_figures/z.py``) as a module.

    Benchmarks are a package: tests import them as ``benchmarks.x`` (pyproject's pytest
    ``pythonpath``), never through this.
    """
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def integer_valued(model: nn.Module, largest: int = 2) -> nn.Module:
    """Scale and round every parameter of ``model`` to integers in ``[-largest, largest]``.

    With integer weights and integer inputs every activation is an exact integer, so results do
    not depend on the order of summation: batch sizes, thread counts and CPUs all give
    bit-identical activations, and ties are exact by construction (as long as activations stay
    below 2**24, where float32 stops holding every integer: keep nets small and inputs 0/1).
    """
    with torch.no_grad():
        for p in model.parameters():
            top = p.abs().max()
            p.copy_(torch.round(p / top * largest) if top > 0 else p)
    return model


def assert_same_top(
    indices: Tensor, values: Tensor, reference: Tensor, *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """``indices``/``values`` are a top-k of ``reference`` (one value per item) up to rounding.

    Floats are not batch-invariant: a conv over 1 image and over 8 may differ in the last bit,
    so two items within rounding of each other may come in either order. Asserted instead:
    the values match the reference at those indices, they are sorted, and no item left out
    beats a kept one by more than the tolerance (so wherever the reference values differ by
    more than rounding, the indices are exactly the reference's top-k).
    """
    k = indices.numel()
    assert len(set(indices.tolist())) == k, "duplicate indices"
    ref = reference.double()
    torch.testing.assert_close(values.double(), ref[indices], rtol=rtol, atol=atol)
    tol = atol + rtol * float(ref.abs().max())
    assert bool((values[:-1].double() >= values[1:].double() - tol).all()), "not sorted"
    left_out = torch.ones(ref.numel(), dtype=torch.bool)
    left_out[indices] = False
    if bool(left_out.any()):
        assert float(ref[left_out].max()) <= float(ref[indices].min()) + tol


#: The torch.distributed backends of the two-process tests: gloo always, nccl where two GPUs are.
BACKENDS = [
    "gloo",
    pytest.param(
        "nccl",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and torch.cuda.device_count() >= 2),
            reason="nccl needs two CUDA devices",
        ),
    ),
]


def torchrun(
    script: str, args: list[str], env: dict[str, str], timeout: float
) -> tuple[int, str, float]:
    """Run ``tests/<script>`` on two ranks with torchrun (real processes, one thread each):
    ``(exit code, output, seconds)``. The whole process group is killed if it outlives
    ``timeout`` (a hang), and the test fails with the output's tail.

    Each rank's stderr is also kept in a file (torchrun's ``--tee``); the last lines of both
    are appended to the output and printed, so pytest shows them whenever the test fails (a
    rank that aborts in C++, e.g. SIGABRT, leaves its last words there, not in the agent's
    summary that ends the output)."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    logs = Path(tempfile.mkdtemp(prefix="polyprune-torchrun-"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "--log-dir", str(logs), "--tee", "2",
               str(ROOT / "tests" / script), *args]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(
        command, env=environment, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the agent and its workers: our own session
        output, _ = proc.communicate()
        hung = True
    finally:
        tails = rank_stderr_tails(logs)
        shutil.rmtree(logs, ignore_errors=True)
    output += tails
    print(f"torchrun exited with {proc.returncode}{tails}", file=sys.stderr)  # shown on failure
    if hung:
        pytest.fail(f"torchrun hung for {timeout} s:\n{output[-6000:]}")
    return proc.returncode, output, time.monotonic() - start


def rank_stderr_tails(logs: Path, size: int = 1500) -> str:
    """The last ``size`` characters of every rank's stderr that torchrun kept under ``logs``
    (``<run>/attempt_<n>/<local rank>/stderr.log``), rank by rank."""
    parts = []
    for path in sorted(
        logs.rglob("stderr.log"), key=lambda p: (p.parent.parent.name, p.parent.name)
    ):
        text = path.read_text(errors="replace")
        parts.append(
            f"\n--- rank {path.parent.name} ({path.parent.parent.name}) stderr, last {size} "
            f"characters ---\n{text[-size:] if text else '(empty)'}"
        )
    return "".join(parts) or "\n--- no rank stderr kept (torchrun did not start the ranks) ---"


def check_crops(model: nn.Module, layer: str, x: Tensor) -> str:
    """top_activating with crops equals the unit on whole images; returns how it was cropped,
    or "refused" for a layer that is not a channels-first map (refused with a clear error)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            top = pp.top_activating(model, pp.Unit(layer, 0), x, k=2, keep_inputs=True,
                                    progress=False)  # fmt: skip
        except ValueError as exc:
            assert "channels-last maps" in str(exc) or "sequence of tokens" in str(exc), exc
            return "refused"
    fallbacks = [w for w in caught if "whole images are used" in str(w.message)]
    assert top.unit.position is not None
    i, j = top.unit.position
    reference = layer_output(model, layer, x)[:, 0, i, j]
    assert_same_top(top.indices, top.values, reference, rtol=1e-4, atol=1e-5)
    if top.field is not None:
        assert top.inputs is not None and top.input_unit is not None
        assert top.input_unit.position is not None
        a, b = top.input_unit.position
        on_crops = layer_output(model, layer, top.inputs)[:, 0, a, b]
        torch.testing.assert_close(on_crops, reference[top.indices], rtol=1e-4, atol=1e-5)
        return "whole image" if top.field.whole_image else "crop"
    return "fallback" if fallbacks else "whole image"


def crops_are_exact(model: nn.Module, layer: str, size: int, units: list[tuple[int, int]]) -> None:
    """Each unit's crop gives its activation on the whole image (two random images),
    starts on the field's lattice (and ends on it, from the image's edge, when anchored); the
    first unit's box is the one the probe measures."""
    rf = pp.ReceptiveField.of(model, layer, size)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    full = layer_output(model, layer, x)
    h, w = rf.output_size
    assert tuple(full.shape[2:]) == (h, w)
    for n, (i, j) in enumerate(units):
        i, j = min(i, h - 1), min(j, w - 1)
        box = rf.box((i, j))
        if box[0] >= box[2] or box[1] >= box[3]:  # a unit that sees only padding
            with pytest.raises(ValueError, match="only padding"):
                rf.crop(x, (i, j))
            continue
        top, left, bottom, right = rf.crop_box((i, j))
        lattice = rf._lattice or rf.stride
        assert top % lattice[0] == 0 and left % lattice[1] == 0
        if rf._anchored:
            assert (size - bottom) % lattice[0] == 0 and (size - right) % lattice[1] == 0
        crop = rf.crop(x, (i, j))
        got = layer_output(model, layer, crop.images)[..., crop.unit[0], crop.unit[1]]
        torch.testing.assert_close(got, full[..., i, j], rtol=1e-5, atol=1e-5)
        if n == 0:  # exact at the border too: the probe finds the same box
            assert pp.ReceptiveField.probe(model, layer, size, (i, j)) == box


@contextmanager
def installed_plugin(root: Path, name: str, source: str) -> Iterator[str]:
    """A user's plugin module ``name`` (``source``) written under ``root`` and imported, as
    ``--import name`` would; ``root`` leaves ``sys.path`` afterwards."""
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(root))
    try:
        __import__(name)
        yield name
    finally:
        sys.path.remove(str(root))


def study_by_plugin(tmp_path: Path, method: str, plugin: str) -> tuple[int, Path]:
    """``polyprune study --methods METHOD --import PLUGIN`` on a small zoo model and image
    folder: the exit code and the output directory."""
    from polyprune.cli import main

    folder = pp.zoo.write_image_folder(tmp_path / "images", 10, size=32, seed=3)
    out = tmp_path / "study"
    code = main([
        "study", "--model", "zoo:concepts-merged", "--layer", "features.9", "--unit", "3",
        "--data", str(folder), "--out", str(out), "--k", "40", "--methods", method,
        "--import", plugin, "--quiet",
    ])  # fmt: skip
    return code, out


# -- restoring: the model comes back bit for bit ---------------------------------------------


class Snapshot(TypedDict):
    """What :func:`assert_restored` compares: the model's parameters (the objects), their
    ``requires_grad`` and ``.grad`` (the objects), its state (copies), module classes, training
    flags, hook counts and parametrizations, and buffer names."""

    params: list[tuple[str, nn.Parameter]]
    flags: list[bool]
    grads: list[Tensor | None]
    state: list[tuple[str, Tensor]]
    classes: list[type[nn.Module]]
    training: list[bool]
    hooks: list[tuple[int, int, int]]
    parametrized: list[bool]
    buffers: list[str]


def snapshot(model: nn.Module) -> Snapshot:
    return {
        "params": [(n, p) for n, p in model.named_parameters()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "state": [(k, v.clone()) for k, v in model.state_dict().items()],
        "classes": [type(m) for m in model.modules()],
        "training": [m.training for m in model.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "parametrized": [parametrize.is_parametrized(m) for m in model.modules()],
        "buffers": [n for n, _ in model.named_buffers()],
    }


def assert_restored(model: nn.Module, before: Snapshot) -> None:
    after = snapshot(model)
    assert [n for n, _ in after["params"]] == [n for n, _ in before["params"]]
    assert all(a is b for (_, a), (_, b) in zip(after["params"], before["params"], strict=True))
    assert all(a is b for a, b in zip(after["grads"], before["grads"], strict=True))
    assert after["flags"] == before["flags"] and after["classes"] == before["classes"]
    assert after["training"] == before["training"] and after["buffers"] == before["buffers"]
    assert after["hooks"] == before["hooks"]
    assert after["parametrized"] == before["parametrized"]
    assert [k for k, _ in after["state"]] == [k for k, _ in before["state"]]
    for (_, a), (_, b) in zip(after["state"], before["state"], strict=True):
        assert torch.equal(a, b)
