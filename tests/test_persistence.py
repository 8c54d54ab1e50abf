"""Results a researcher keeps: a saved study reloads (weights_only) in a fresh process and
reproduces its report; saves are atomic; every part round-trips."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import ToTensor

import polyprune as pp
from polyprune import zoo
from polyprune.results import StudyResult, TopActivations


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, _ = zoo.planted_network()
    folder = zoo.write_image_folder(tmp_path_factory.mktemp("data") / "images", 40, size=32,
                                    seed=4)  # fmt: skip
    data = ImageFolder(str(folder), transform=ToTensor())
    result = pp.study(
        model, pp.Unit(*zoo.PLANTED_TARGET), data, k=80, methods=("cs", "snip"),
        config=pp.CSConfig(epochs=4), progress=False,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("saved") / "study"
    result.save(out, crops_per_cluster=5)
    return result, out, data


def test_a_saved_study_holds_everything_to_inspect_it(saved):
    result, out, data = saved
    assert result.is_polysemantic
    names = {p.name for p in out.iterdir()}
    assert {"study.pt", "results.json", "report.html", "report.md", "masks", "crops.png"} <= names
    state = torch.load(out / "study.pt", weights_only=True)  # no code is unpickled
    assert set(state["subnetworks"]) == {"cs", "snip"}
    for method, subs in result.subnetworks.items():
        for label, sub in subs.items():
            masks = pp.Masks.load(out / "masks" / f"{method}-cluster{label}.pt")
            assert masks.iou(sub.masks) == 1.0 or masks.kept_weights() == 0
    saved_json = json.loads((out / "results.json").read_text())
    paths = saved_json["top_paths"]
    assert paths == [data.samples[i][0] for i in result.top.indices.tolist()]
    provenance = saved_json["provenance"]
    assert provenance["model"]["class"].endswith("PlantedNetwork")
    assert len(provenance["model"]["sha256"]) == 64 and provenance["data"]["images"] == 280
    assert provenance["versions"]["polyprune"] == pp.__version__ and provenance["seed"] == 0
    assert provenance["started"] <= provenance["finished"]
    activations = state["activations"]
    assert set(activations) == set(result.activations) and "original" in activations


def test_the_loaded_study_equals_the_saved_one(saved):
    result, out, _ = saved
    again = StudyResult.load(out)
    assert again.summary() == result.summary()
    assert again.rows() == result.rows()
    assert again.provenance == result.provenance and again.config == result.config
    assert torch.equal(again.top.indices, result.top.indices)
    assert again.top.paths == result.top.paths and again.top.inputs is None
    assert again.top.field == result.top.field
    for method, subs in result.subnetworks.items():
        for label, sub in subs.items():
            other = again.subnetworks[method][label]
            assert other.masks.iou(sub.masks) == 1.0 or sub.masks.kept_weights() == 0
            assert other.history == sub.history
    for title, values in result.activations.items():
        assert torch.equal(again.activations[title], values)
    assert sorted(again.crops) == sorted(set(result.clustering.labels.tolist()))
    assert all(len(x) <= 5 for x in again.crops.values())


def test_a_fresh_process_reproduces_the_report(saved, tmp_path):
    _, out, _ = saved
    code = (
        "import sys\nfrom polyprune.results import StudyResult\n"
        "StudyResult.load(sys.argv[1]).save(sys.argv[2], crops_per_cluster=5)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "again")], check=True)
    for name in ("report.md", "results.json"):
        assert (tmp_path / "again" / name).read_text() == (out / name).read_text()
    assert (tmp_path / "again" / "crops.png").stat().st_size > 1000


def test_save_is_atomic_and_leaves_no_stale_files(saved, tmp_path, monkeypatch):
    result, _, _ = saved
    target = tmp_path / "study"
    result.save(target)
    # a figure an older version wrote, listed in its manifest: polyprune's, so replaced
    (target / "stale-from-an-older-version.png").write_text("x")
    manifest = json.loads((target / "polyprune.json").read_text())
    manifest["files"].append("stale-from-an-older-version.png")
    (target / "polyprune.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    from polyprune import plot

    def fail(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(plot, "histograms", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        result.save(target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no temporary directory left
    monkeypatch.undo()
    result.save(target, overwrite=True)
    assert not (target / "stale-from-an-older-version.png").exists()


@pytest.mark.parametrize("bad", ["file", "under_file"])
def test_save_refuses_a_file_before_writing(saved, tmp_path, bad):
    result, _, _ = saved
    (tmp_path / "file").write_text("not a directory")
    target = tmp_path / "file" if bad == "file" else tmp_path / "file" / "study"
    with pytest.raises(ValueError, match=r"is a file|lies under the file"):
        result.save(target)


def test_loading_a_folder_without_a_study_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved study"):
        StudyResult.load(tmp_path)
    (tmp_path / "study.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable polyprune study"):
        StudyResult.load(tmp_path)


def test_top_activations_and_fields_round_trip(saved):
    result, _, _ = saved
    top = result.top
    again = TopActivations.from_dict(top.to_dict())
    assert again.field == top.field and again.unit == top.unit and again.paths == top.paths
    assert again.field is not None and again.field.box((0, 0)) == top.field.box((0, 0))
    assert torch.equal(again.codes, top.codes) and again.inputs is not None


def test_the_model_fingerprint_sees_every_tensor_including_0d_buffers():
    from polyprune._provenance import model_description

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = model_description(net)
    assert before["parameters"] == 3 * 4 * 9 + 4 + 4 + 4
    same = model_description(copy.deepcopy(net))
    assert same["sha256"] == before["sha256"]
    net.get_buffer("1.num_batches_tracked").add_(1)  # a 0-d long buffer
    assert model_description(net)["sha256"] != before["sha256"]


def test_a_saved_scan_of_a_folder_keeps_the_files_of_every_channels_top_items(saved, tmp_path):
    _, _, data = saved
    model, _ = zoo.planted_network()
    scan = pp.scan(model, "features.6", data, k=30, progress=False)
    scan.save(tmp_path / "scan")
    back = pp.results.Scan.load(tmp_path / "scan")
    for channel in range(3):
        top = back.top(channel)  # no data: the files come from the saved scan
        expected = [data.samples[int(i)][0] for i in top.indices]
        assert top.paths == expected == scan.top(channel).paths
        assert len(set(top.paths)) == len(top)
    unsized = pp.scan(model, "features.6", torch.stack([x for x, _ in data]), k=30, progress=False)
    assert unsized.top(0).paths is None  # a tensor has no files


def test_visualizations_are_in_the_report_and_survive_a_reload(tmp_path):
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(300, size=zoo.PLANTED_SIZE, seed=2)
    result = pp.study(
        model, pp.Unit(*zoo.PLANTED_TARGET), images, k=80, methods=("cs",),
        config=pp.CSConfig(epochs=3), visualize=True,
        visualize_options={"steps": 4, "size": 24}, progress=False,
    )  # fmt: skip
    assert result.is_polysemantic
    expected = {"original"} | {f"cs → cluster {c}" for c in result.subnetworks["cs"]}
    assert set(result.visualizations) == expected
    report = result.save(tmp_path / "study")
    assert (tmp_path / "study" / "visualizations.png").is_file()
    assert 'src="visualizations.png"' in report.read_text()
    back = StudyResult.load(tmp_path / "study")
    for name, image in result.visualizations.items():
        assert torch.equal(back.visualizations[name], image)


def test_a_saved_folder_has_the_permissions_of_an_ordinary_one(saved, tmp_path):
    result, _, _ = saved
    (tmp_path / "ordinary").mkdir()
    result.save(tmp_path / "study")
    mode = (tmp_path / "study").stat().st_mode & 0o777
    assert mode == (tmp_path / "ordinary").stat().st_mode & 0o777  # others may read it (umask)


def test_crop_rows_name_the_whole_cluster_size(saved, tmp_path, monkeypatch):
    """The report shows 5 crops per cluster, but each row's title gives the cluster's size,
    fresh and reloaded alike; 0 crops per cluster writes no grid and saves no crops."""
    import polyprune._report as report
    from polyprune import plot

    result, out, _ = saved
    y = result.clustering.labels
    sizes = {int(v): int((y == v).sum()) for v in set(y.tolist())}
    assert max(sizes.values()) > 5  # else the title could not tell the two apart
    calls, crops = [], plot.crops

    def spy(images, labels, path, **kw):
        calls.append((labels, kw))
        return crops(images, labels, path, **kw)

    monkeypatch.setattr(plot, "crops", spy)
    for study in (result, StudyResult.load(out)):
        report.write_report(study, tmp_path / f"r{len(calls)}", per_cluster=5)
        labels, kw = calls[-1]
        assert kw["sizes"] == sizes
        assert all(int((labels == v).sum()) == min(n, 5) for v, n in sizes.items())
    result.save(tmp_path / "none", crops_per_cluster=0)
    assert not (tmp_path / "none" / "crops.png").exists()
    assert torch.load(tmp_path / "none" / "study.pt", weights_only=True)["crops"] == {}


def test_crop_grid_titles(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from polyprune import plot

    figures = []

    def save(fig: Figure, path: Path, *_: object) -> Path:
        figures.append(fig)
        return path

    monkeypatch.setattr(plot, "_save", save)
    labels = [0] * 3 + [1] * 2 + [-1]
    plot.crops(torch.rand(6, 3, 8, 8), labels, tmp_path / "a.png", per_cluster=2)
    plot.crops(torch.rand(6, 3, 8, 8), labels, tmp_path / "b.png", per_cluster=2,
               sizes={0: 30, 1: 20, -1: 7})  # fmt: skip
    titles = [[ax.get_title(loc="left") for ax in f.axes if ax.get_title(loc="left")]
              for f in figures]  # fmt: skip
    assert titles == [["cluster 0 (3)", "cluster 1 (2)", "noise (1)"],
                      ["cluster 0 (30)", "cluster 1 (20)", "noise (7)"]]  # fmt: skip


def test_file_paths_follow_nested_subsets_and_an_empty_selection():
    from torch.utils.data import Dataset, Subset

    from polyprune._provenance import file_paths

    class Folder(Dataset[torch.Tensor]):  # as ImageFolder for file_paths: (path, class) samples
        def __init__(self) -> None:
            self.samples = [(f"img{i}.png", i % 2) for i in range(10)]

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.zeros(3, 4, 4)

    inner = Subset(Folder(), [9, 7, 5, 3, 1])
    outer = Subset(inner, [4, 0, 2])  # -> inner positions 4, 0, 2 -> files 1, 9, 5
    assert file_paths(outer, [0, 1, 2]) == ["img1.png", "img9.png", "img5.png"]
    assert file_paths(outer, [2]) == ["img5.png"]
    assert file_paths(outer, []) == [] and file_paths(Folder(), []) == []
    assert file_paths(torch.zeros(2, 3, 4, 4), [0]) is None
