"""A save never deletes or changes a file polyprune did not create (issue 20 §1).

A result directory is replaced only when it holds an earlier result of the same kind (its
``polyprune.json``) and the caller asked (``overwrite=True``, ``--force``); anything else is
refused before any work. Every file is written atomically: a save killed while it writes leaves
the earlier file whole, and the next save removes what the killed one left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import polyprune as pp
from polyprune import zoo
from polyprune._files import MANIFEST, check_result_directory
from polyprune.cli import main
from polyprune.results import StudyResult

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ["--model", "zoo:planted", "--layer", "features.6"]


@pytest.fixture(scope="module")
def result() -> StudyResult:
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(100, size=zoo.PLANTED_SIZE, seed=1)
    return pp.study(model, pp.Unit("features.6", 0), images, k=20, methods=("snip",),
                    progress=False)  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's folder: files polyprune did not write."""
    folder = tmp_path / "project"
    (folder / "images").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "images" / "a.png").write_bytes(b"not really a png")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


# ------------------------------------------------------------------------------ the Python API


def test_a_save_into_the_current_directory_is_refused(result, project, monkeypatch):
    monkeypatch.chdir(project)
    before = _files(project)
    for target in (os.getcwd(), ".", "", project.parent):  # before: every file there was gone
        with pytest.raises(ValueError, match=r"current directory|is empty") as info:
            result.save(target, overwrite=True)
        assert isinstance(info.value, FileExistsError) or target == ""
    assert _files(project) == before and sorted(p.name for p in project.parent.iterdir()) == [
        "project"
    ]


def test_a_folder_with_other_files_is_refused_before_writing(result, project):
    before = _files(project)
    refused = r"already holds images/, notes\.txt and is no polyprune study"
    with pytest.raises(FileExistsError, match=refused):
        result.save(project, overwrite=True)
    assert _files(project) == before
    assert sorted(p.name for p in project.parent.iterdir()) == ["project"]  # no temp folder


def test_an_earlier_study_is_replaced_only_when_asked(result, tmp_path):
    out = tmp_path / "study"
    (out).mkdir()  # an empty folder is fine
    result.save(out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["polyprune"] == "study" and "study.pt" in manifest["files"]
    before = _files(out)
    with pytest.raises(FileExistsError, match="holds an earlier polyprune study: pass "
                       "overwrite=True to replace it"):  # fmt: skip
        result.save(out)
    assert _files(out) == before
    result.save(out, overwrite=True)
    assert StudyResult.load(out).summary() == result.summary()
    (out / "notes.txt").write_text("mine")  # the user's file in a result: never deleted
    with pytest.raises(FileExistsError, match=r"files it did not write \(notes\.txt\)"):
        result.save(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_result_of_another_kind_is_not_replaced(result, tmp_path):
    out = tmp_path / "study"
    result.save(out)
    with pytest.raises(FileExistsError, match="holds a polyprune study, not a scan"):
        check_result_directory(out, "scan", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        result.save(tmp_path / "file", overwrite=True)


def test_masks_replace_only_an_earlier_masks_file_when_asked(tmp_path):
    masks = pp.Masks({"0.weight": torch.tensor([[True], [False]])}, "kernel")
    other = pp.Masks({"0.weight": torch.tensor([[False], [False]])}, "kernel")
    path = tmp_path / "m.pt"
    masks.save(path)
    with pytest.raises(FileExistsError, match="already exists: pass overwrite=True"):
        other.save(path)
    assert pp.Masks.load(path).iou(masks) == 1.0
    other.save(path, overwrite=True)
    assert pp.Masks.load(path).kept_weights() == 0
    mine = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(2)}, mine)
    for file in (mine, tmp_path / "notes.txt"):
        file.write_bytes(file.read_bytes() if file.exists() else b"my notes")
        before = file.read_bytes()
        with pytest.raises(ValueError, match="is not a polyprune masks file"):
            masks.save(file, overwrite=True)
        assert file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "model.pt", "notes.txt"]
    with pytest.raises(TypeError, match="overwrite must be True or False, got 'yes'"):
        masks.save(path, overwrite="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", ["png", "pdf", "svg"])
def test_figures_replace_only_an_earlier_figure_when_asked(tmp_path, suffix):
    path = tmp_path / f"fig.{suffix}"
    pp.plot.images({"a": torch.zeros(1, 3, 4, 4)}, path)
    first = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists: pass overwrite=True"):
        pp.plot.images({"a": torch.ones(1, 3, 4, 4)}, path)
    assert path.read_bytes() == first
    pp.plot.images({"b": torch.ones(1, 3, 4, 4)}, path, overwrite=True)
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_figure_never_replaces_a_file_polyprune_did_not_write(tmp_path):
    from matplotlib.figure import Figure

    theirs = tmp_path / "theirs.png"
    Figure().savefig(theirs)  # a PNG, but not one of polyprune's figures
    jpg = tmp_path / "mine.jpg"
    pp.plot.images({"a": torch.zeros(1, 3, 4, 4)}, jpg)  # JPEG holds no metadata to know it by
    for file in (theirs, tmp_path / "notes.png", jpg):
        file.write_bytes(file.read_bytes() if file.exists() else b"my notes")
        before = file.read_bytes()
        with pytest.raises(ValueError, match="is not a polyprune figure"):
            pp.plot.images({"a": torch.zeros(1, 3, 4, 4)}, file, overwrite=True)
        assert file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.jpg", "notes.png", "theirs.png"]


def test_a_figure_target_is_checked_before_anything_is_drawn(tmp_path, monkeypatch):
    (tmp_path / "taken.png").write_bytes(b"x")
    (tmp_path / "file").write_bytes(b"x")
    drawn = []
    monkeypatch.setattr(pp.plot, "_figure", lambda *a, **k: drawn.append(1))
    bad = {
        "taken.png": (FileExistsError, "already exists"),
        "figure.txt": (ValueError, r"ends in \.txt, a format matplotlib does not write"),
        "file/sub/fig.png": (ValueError, "is a file"),
    }
    for name, (error, message) in bad.items():
        with pytest.raises(error, match=message):
            pp.plot.crops(torch.zeros(2, 3, 4, 4), [0, 1], tmp_path / name)
    assert drawn == []
    monkeypatch.undo()
    made = pp.plot.images({"a": torch.zeros(1, 3, 4, 4)}, tmp_path / "new" / "sub" / "fig")
    assert made.read_bytes()[:4] == b"\x89PNG"  # parents made; no suffix: PNG


# --------------------------------------------------------------------------- killed mid-save

_CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys, time
    import torch, polyprune as pp

    path, how = sys.argv[1], sys.argv[2]
    big = pp.Masks({"0.weight": torch.ones(2000, 2000, dtype=torch.bool)}, "weight")
    if how == "fsize":  # the disk quota is hit mid-write: the kernel ends the process (SIGXFSZ)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: as in C programs
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    else:  # block inside the write, after part of it is on disk, until SIGKILL
        real = torch.save

        def partial(obj, f, *args, **kwargs):
            f.write(b"PK\\x03\\x04 half of a zip archive")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)

        torch.save = partial
    big.save(path, overwrite=True)
    """
)


@pytest.mark.parametrize("how", ["fsize", "sigkill"])
def test_a_save_killed_mid_write_leaves_the_earlier_file_whole(tmp_path, how):
    masks = pp.Masks({"0.weight": torch.tensor([[True], [False]])}, "kernel")
    path = tmp_path / "m.pt"
    masks.save(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", _CHILD, str(path), how]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    if how == "sigkill":
        assert proc.stdout.readline() == b"writing\n"
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGXFSZ if how == "fsize" else -signal.SIGKILL)
    assert pp.Masks.load(path).iou(masks) == 1.0  # before: unreadable, or gone
    strays = [p.name for p in tmp_path.iterdir() if p.name != "m.pt"]
    assert len(strays) == 1 and strays[0].startswith(".m.pt.polyprune-"), strays
    masks.save(path, overwrite=True)  # the next save removes what the killed one left
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_directory_save_killed_between_its_renames_is_undone_by_the_next(result, tmp_path):
    out = tmp_path / "study"
    result.save(out)
    before = _files(out)
    aside = tmp_path / ".study.old-abcd1234"  # as a save killed after moving the study aside
    aside.mkdir()
    out.rename(aside / "previous")
    (tmp_path / ".study.writing-abcd1234").mkdir()
    (tmp_path / ".study.writing-abcd1234" / "study.pt").write_bytes(b"half")
    with pytest.raises(FileExistsError, match="earlier polyprune study"):
        result.save(out)  # the earlier study is back first, and not replaced unasked
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]


# ------------------------------------------------------------------------- the command line


def _one_line(capsys: pytest.CaptureFixture[str], *parts: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyprune: error: ") and len(err.splitlines()) == 1, err
    for part in parts:
        assert part in err, (part, err)


def test_out_the_data_folder_is_refused_and_the_images_survive(
    folder, tmp_path, capsys, no_work, monkeypatch
):
    data = tmp_path / "mydata"
    for cls in ("rings", "dots"):
        (data / cls).mkdir(parents=True)
        for image in sorted((folder / cls).iterdir())[:6]:
            (data / cls / image.name).write_bytes(image.read_bytes())
    (data / "notes.txt").write_text("my notes")
    before = _files(data)
    study = ["study", *PLANTED, "--unit", "0", "--k", "10", "--data", str(data), "-qq"]
    scan = ["scan", *PLANTED, "--k", "10", "--data", str(data), "-qq"]
    for argv in (study, scan):
        for out, says in [(data, "is the --data folder"), (data / "rings", "lies in the --data"),
                          (tmp_path, "holds the --data folder")]:  # fmt: skip
            # before: rc 0, the images and notes.txt replaced by the report
            assert main([*argv, "--out", str(out), "--force"]) == 2
            _one_line(capsys, f"--out {out} {says}", "give a directory outside it")
    monkeypatch.chdir(data)
    for out in (".", "", str(data)):  # before: the whole study ran, then OSError
        assert main([*study, "--out", out]) == 2
        _one_line(capsys, "--out ")
    assert main(["demo", "--out", "."]) == 2
    _one_line(capsys, "--out . is the current directory: give the name of a new directory")
    assert _files(data) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_force_replaces_an_earlier_result_of_the_same_kind_only(folder, tmp_path, capsys):
    out = tmp_path / "out"
    study = ["study", *PLANTED, "--unit", "0", "--k", "20", "--data", str(folder),
             "--methods", "snip", "-qq", "--out", str(out)]  # fmt: skip
    assert main(study) == 0
    first = _files(out)
    assert main(study) == 2
    _one_line(capsys, f"--out {out} holds an earlier polyprune study: pass --force to replace it")
    assert _files(out) == first
    scan = ["scan", *PLANTED, "--k", "20", "--data", str(folder), "-qq", "--out", str(out)]
    assert main([*scan, "--force"]) == 2
    _one_line(capsys, f"--out {out} holds a polyprune study, not a scan")
    assert main([*study, "--force"]) == 0
    assert json.loads((out / MANIFEST).read_text())["polyprune"] == "study"
    (out / "notes.txt").write_text("mine")
    assert main(["report", str(out)]) == 2  # in place: the user's file is never deleted
    _one_line(capsys, "files it did not write (notes.txt)")
    assert (out / "notes.txt").read_text() == "mine"
