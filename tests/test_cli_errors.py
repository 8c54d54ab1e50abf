"""The command line never prints a traceback: user errors (bad options, weights files, image
folders, output directories) are one line and exit status 2, checked before any work; anything
unexpected is one line and a hint, exit status 1; Ctrl-C is exit status 130."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.datasets import ImageFolder

from polyprune.cli import _commands, _launch, main
from polyprune.cli._errors import CLIError
from polyprune.cli._inputs import ImageFiles, image_transform, open_images
from polyprune.cli._weights import read_state_dict

ROOT = Path(__file__).resolve().parents[1]
WEIGHT_CASES = ("garbage", "empty", "truncated", "object", "tensor", "list", "nested-list",
                "non-tensor", "empty-dict")  # fmt: skip
STUDY = ["study", "--model", "zoo:concepts-merged", "--layer", "features.9", "--unit", "3",
         "--k", "20", "--methods", "snip", "-qq"]  # fmt: skip


def one_line_error(capsys: pytest.CaptureFixture[str], *parts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyprune: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)
    return err


# ------------------------------------------------------------------ unexpected errors, Ctrl-C


def test_an_unexpected_error_is_one_line_and_a_hint(monkeypatch, capsys):
    def broken(args: object) -> int:
        raise RuntimeError("something broke\nsecond line of the message")

    monkeypatch.setitem(_commands.COMMANDS, "demo", broken)
    monkeypatch.delenv("POLYPRUNE_DEBUG", raising=False)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "polyprune: error: RuntimeError: something broke",
        "(set POLYPRUNE_DEBUG=1 for the traceback)",
    ]
    monkeypatch.setenv("POLYPRUNE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["demo"])


@pytest.mark.parametrize(
    ("raised", "code", "shown"),
    [
        (CLIError("first line\nsecond line"), 2, "polyprune: error: first line"),
        (RuntimeError(), 1, "polyprune: error: RuntimeError"),
        (OSError(28, "No space left on device"), 1,
         "polyprune: error: OSError: [Errno 28] No space left on device"),
    ],
)  # fmt: skip
def test_every_error_is_one_line(monkeypatch, capsys, raised, code, shown):
    def broken(args: object) -> int:
        raise raised

    monkeypatch.setitem(_commands.COMMANDS, "demo", broken)
    monkeypatch.delenv("POLYPRUNE_DEBUG", raising=False)
    assert main(["demo"]) == code
    assert capsys.readouterr().err.strip().splitlines()[0] == shown


def test_ctrl_c_in_process_is_exit_130(monkeypatch, capsys):
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(_commands.COMMANDS, "demo", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err.strip() == "polyprune: interrupted"


def test_errors_name_the_rank_under_torchrun(monkeypatch, capsys, no_work, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*STUDY, "--data", str(tmp_path), "--threads", "0"]) == 2
    assert capsys.readouterr().err.startswith("polyprune: error (rank 1): --threads: must be ≥ 1")
    used = []
    monkeypatch.setattr("torch.distributed.init_process_group", lambda b, **kw: used.append(b))
    monkeypatch.setattr("polyprune._dist.shutdown", lambda: used.append("done"))
    (tmp_path / "afile").write_text("x")
    assert main([*STUDY, "--data", str(tmp_path), "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.startswith("polyprune: error (rank 1): --out ")
    assert used == ["gloo", "done"]  # --device auto without CUDA: gloo, and the group is closed


def test_device_auto_takes_cuda_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _launch.resolve_device("auto") == "cpu"
    with pytest.raises(CLIError, match="CUDA is not available"):
        _launch.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _launch.resolve_device("auto") == "cuda"


def test_ctrl_c_during_a_study_exits_130_without_a_traceback(folder, tmp_path):
    """A real SIGINT to ``python -m polyprune`` while Continuous Sparsification trains.

    Run as from a terminal: SIGINT back to Python's default handler first. A process started as
    a background job of a non-interactive shell (``cmd &`` in a CI script) inherits SIGINT
    ignored, and Python then never turns it into KeyboardInterrupt."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POLYPRUNE_DEBUG": ""}
    as_from_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'polyprune'; runpy.run_module('polyprune', run_name='__main__')"
    )
    argv = [sys.executable, "-c", as_from_a_terminal, "study", "--model", "zoo:planted",
            "--layer", "features.6", "--unit", "0", "--data", str(folder), "--k", "20",
            "--methods", "cs", "--epochs", "100000", "--threads", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:  # progress lines: wait for the fitting stage
        seen.append(line)
        if "3/4 fitting" in line:
            break
    assert seen and "3/4 fitting" in seen[-1], "".join(seen)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert rest.strip().splitlines()[-1] == "polyprune: interrupted"
    assert "Traceback" not in rest and not (tmp_path / "out").exists()


# --------------------------------------------------------------- options, checked while parsing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "0"], "--image-size: must be ≥ 1, got 0"),
        (["--k", "9"], "--k: must be ≥ 10 (their codes are clustered), got 9"),
        (["--k", "ten"], "--k: must be an integer, got 'ten'"),
        (["--batch-size", "0"], "--batch-size: must be ≥ 1, got 0"),
        (["--workers", "-1"], "--workers: must be ≥ 0, got -1"),
        (["--keep", "0"], "--keep: must be in (0, 1], got 0"),
        (["--keep", "1.5"], "--keep: must be in (0, 1], got 1.5"),
        (["--keep", "nan"], "--keep: must be in (0, 1], got nan"),
        (["--held-out", "1"], "--held-out: must be in (0, 1), got 1"),
        (["--epochs", "1"], "--epochs: must be ≥ 2, got 1"),
        (["--min-cluster-size", "1"], "--min-cluster-size: must be ≥ 2, got 1"),
        (["--min-samples", "0"], "--min-samples: must be ≥ 1, got 0"),
        (["--crops-per-cluster", "-1"], "--crops-per-cluster: must be ≥ 0, got -1"),
        (["--threads", "0"], "--threads: must be ≥ 1, got 0"),
        (["--position", "-1", "2"], "--position: must be ≥ 0, got -1"),
        (["--cluster-selection-method", "best"], "--cluster-selection-method: invalid choice"),
        (["--device", "gpu"], "--device: invalid choice"),
        (["--paper", "--loss", "both"], "--loss: not allowed with argument --paper"),
    ],
)
def test_bad_option_values_fail_while_parsing(folder, capsys, no_work, args, message):
    assert main([*STUDY, "--data", str(folder), *args]) == 2
    one_line_error(capsys, message, "(see polyprune study --help)")


def test_scan_options_are_checked_too(folder, capsys, no_work):
    scan = ["scan", "--model", "zoo:planted", "--layer", "features.6", "--data", str(folder)]
    checks = [(["--crops", "-1"], "--crops: must be ≥ 0"), (["--k", "-5"], "--k: must be ≥ 10"),
              (["--show", "x"], "--show: must be an integer")]  # fmt: skip
    for args, message in checks:
        assert main([*scan, *args]) == 2
        one_line_error(capsys, message)
    assert main([*scan, "--k", "20", "--min-cluster-size", "30"]) == 2
    one_line_error(capsys, "--min-cluster-size 30 is larger than --k 20")


# ------------------------------------------------------------------------------------ --out


@pytest.mark.parametrize("where", ["a file", "under a file", "unwritable"])
def test_out_is_checked_before_any_work(folder, tmp_path, capsys, no_work, where):
    (tmp_path / "afile").write_text("x")
    out = {"a file": tmp_path / "afile", "under a file": tmp_path / "afile" / "x",
           "unwritable": Path("/proc/polyprune-x")}[where]  # fmt: skip
    message = {"a file": "is a file, not a directory", "under a file": "lies under the file",
               "unwritable": "cannot be written"}[where]  # fmt: skip
    assert main([*STUDY, "--data", str(folder), "--out", str(out)]) == 2
    one_line_error(capsys, f"--out {out} {message}")
    scan = ["scan", "--model", "zoo:planted", "--layer", "features.6", "--data", str(folder)]
    assert main([*scan, "--out", str(out)]) == 2
    one_line_error(capsys, f"--out {out} {message}")
    assert main(["demo", "--quiet", "--out", str(out)]) == 2
    one_line_error(capsys, f"--out {out} {message}")


# ------------------------------------------------------------------------------------ --data


def test_empty_folders_name_the_folder_and_the_extensions(tmp_path, capsys, no_work):
    (tmp_path / "empty").mkdir()
    (tmp_path / "classes" / "a").mkdir(parents=True)
    (tmp_path / "classes" / "a" / "notes.txt").write_text("no image")
    (tmp_path / "file.png").write_text("x")
    for data, message in [
        ("empty", f"no images in {tmp_path / 'empty'} (looked for files ending in .jpg, .jpeg, "),
        ("classes", f"no images in the class folders of {tmp_path / 'classes'} (looked for"),
        ("file.png", f"folder of images or of class folders, got the file {tmp_path}"),
        ("missing", f"not found: {tmp_path / 'missing'}"),
    ]:
        assert main([*STUDY, "--data", str(tmp_path / data)]) == 2
        one_line_error(capsys, message)


@pytest.mark.parametrize(
    ("damage", "workers"),
    [("garbage", 0), ("truncated", 0), ("truncated", 1)],  # 1: raised in a DataLoader worker
)
def test_an_image_that_cannot_be_read_is_named(folder, tmp_path, capsys, damage, workers):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    bad = data / "rings" / "00001.png"
    content = bad.read_bytes()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage" if damage == "garbage" else content[:60])
    argv = [*STUDY, "--data", str(data), "--out", str(tmp_path / "out"), "--workers", str(workers)]
    assert main(argv) == 2
    one_line_error(capsys, f"polyprune: error: cannot read image {bad} (")
    assert not (tmp_path / "out").exists()


def test_which_folders_are_class_folders(folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "empty-class").mkdir()
    classes = open_images(str(data))
    assert isinstance(classes, ImageFolder) and len(classes) == 70
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(data / "rings" / "00000.png", flat / "b.PNG")
    shutil.copy(data / "rings" / "00001.png", flat / "a.jpg")  # a PNG named .jpg: PIL reads it
    (flat / ".ipynb_checkpoints").mkdir()  # a folder without images: still a flat folder
    images = open_images(str(flat))
    assert isinstance(images, ImageFiles) and images.root == str(flat)
    assert images.samples == [(str(flat / "a.jpg"), 0), (str(flat / "b.PNG"), 0)]
    images.transform = image_transform(16, False, 1)
    image, label = images[1]
    assert tuple(image.shape) == (1, 16, 16) and label == 0


def test_a_flat_folder_of_images_is_read(folder, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted(folder.rglob("*.png"))):
        shutil.copy(path, flat / f"{i:03d}.png")
    (flat / "README.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main([*STUDY, "--data", str(flat), "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["top_paths"]) == 20
    assert all(Path(p).parent == flat and p.endswith(".png") for p in saved["top_paths"])
    assert saved["provenance"]["data"]["root"] == str(flat)


# ---------------------------------------------------------------------------------- --weights


@pytest.fixture(scope="module")
def squeezenet() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.squeezenet1_1(weights=None).state_dict()


def test_weights_only_for_torchvision_models(folder, capsys, no_work, tmp_path):
    assert main([*STUDY, "--data", str(folder), "--weights", str(tmp_path / "w.pt")]) == 2
    one_line_error(capsys, "--weights is for torchvision models; zoo models ship their weights")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"this is not a checkpoint",
            "not a PyTorch state_dict file (neither a zip archive nor "
            "a pickle: it starts with b'this is ",
        ),
        (b"", "not a PyTorch state_dict file (the file is empty)"),
        ("truncated", "not a PyTorch state_dict file (a truncated or corrupt archive, "),
        (
            Path,
            "not a PyTorch state_dict file (it holds pickled Python objects that are not "
            "tensors: Unsupported global: GLOBAL pathlib.PosixPath",
        ),
        (
            torch.zeros(3),
            "it holds a Tensor, expected a state_dict: a dict of parameter names to tensors",
        ),
        ([1, 2, 3], "it holds a list, expected a state_dict"),
        ({"state_dict": [1, 2]}, "its 'state_dict' holds a list, expected a state_dict"),
        ({"a.weight": torch.zeros(1), "epoch": 3}, "its entry 'epoch' is an int, expected"),
        ({}, "it holds an empty dict"),
    ],
    ids=WEIGHT_CASES,
)
def test_unreadable_weights_say_what_the_file_holds(tmp_path, squeezenet, content, message):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        torch.save(squeezenet, path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        torch.save(Path("/x") if content is Path else content, path)
    with pytest.raises(CLIError) as raised:
        read_state_dict(path)
    text = str(raised.value)
    assert text.startswith(f"cannot read weights from {path}: ") or text.startswith(
        f"cannot use weights from {path}: "
    )
    assert message in text and "\n" not in text


def test_checkpoints_and_dataparallel_saves_are_unwrapped(tmp_path, squeezenet):
    for i, saved in enumerate([
        squeezenet,
        {"state_dict": squeezenet, "epoch": 3},
        {"model": {f"module.{k}": v for k, v in squeezenet.items()}, "optimizer": {}},
    ]):  # fmt: skip
        torch.save(saved, tmp_path / f"{i}.pt")
        state = read_state_dict(tmp_path / f"{i}.pt")
        assert list(state) == list(squeezenet)
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}  # not every key: kept as it is
    torch.save(mixed, tmp_path / "mixed.pt")
    assert list(read_state_dict(tmp_path / "mixed.pt")) == ["module.a", "b"]


def test_weights_of_another_architecture_list_what_differs(folder, tmp_path, capsys, squeezenet):
    wrong = dict(squeezenet)
    del wrong["features.3.squeeze.weight"], wrong["features.3.squeeze.bias"]
    wrong["extra.weight"] = torch.zeros(2)
    wrong["classifier.1.weight"] = torch.zeros(10, 512, 1, 1)
    torch.save(wrong, tmp_path / "wrong.pt")
    argv = ["study", "--model", "torchvision:squeezenet1_1", "--layer", "features.3",
            "--unit", "0", "--data", str(folder), "--k", "10", "-qq",
            "--weights", str(tmp_path / "wrong.pt")]  # fmt: skip
    assert main(argv) == 2
    one_line_error(
        capsys,
        f"weights in {tmp_path / 'wrong.pt'} do not fit torchvision:squeezenet1_1: ",
        "2 missing keys (features.3.squeeze.weight, features.3.squeeze.bias)",
        "1 unexpected keys (extra.weight)",
        "first shape mismatch: classifier.1.weight is (10, 512, 1, 1) in the file, "
        "(1000, 512, 1, 1) in the model",
    )
