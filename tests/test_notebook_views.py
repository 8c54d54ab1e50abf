"""Notebook views: short reprs, small HTML cards with the verdict, flags, best rows, to_pandas."""

from __future__ import annotations

import builtins
from html.parser import HTMLParser
from typing import Any, Protocol

import pytest
import torch
from torchvision import datasets, transforms

import polyprune as pp
from polyprune import _glance, zoo


class _Page(HTMLParser):
    """Tags, text and the classes of rows of an HTML fragment (and whether it parsed whole)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.classes: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.classes += [v or "" for k, v in attrs if k == "class"]
        if tag not in ("img", "br", "meta"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (self.open, tag)
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class _HTML(Protocol):
    def _repr_html_(self) -> str: ...


def _card(obj: _HTML, verdict: str) -> _Page:
    text = obj._repr_html_()
    page = _Page(text)
    assert not page.open, "unclosed tags"
    assert "verdict" in page.classes and verdict in " ".join(page.text)
    assert len(text) < 60_000
    return page


@pytest.fixture(scope="module")
def study_on_folder(tmp_path_factory: pytest.TempPathFactory) -> pp.results.StudyResult:
    root = zoo.write_image_folder(
        tmp_path_factory.mktemp("nb") / "data", 30, ("rings", "hstripes", "dots"), size=32, seed=2
    )
    data = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    model, _ = zoo.planted_network()
    return pp.study(model, pp.Unit(*zoo.PLANTED_TARGET), data, k=40, methods=["snip"],
                    progress=False)  # fmt: skip


def test_a_study_reads_in_a_few_lines(study_on_folder):
    text = repr(study_on_folder)
    lines = text.splitlines()
    assert 1 <= len(lines) <= 6 and len(text) < 800, text
    assert text.startswith("StudyResult(features.6[0]@") and "polysemantic" in lines[0]
    assert "tensor(" not in text
    # each cluster names the folders its images come from, with counts
    assert any("rings" in line or "hstripes" in line for line in lines[1:]), text


def test_the_study_card_holds_verdict_classes_thumbnails_and_the_best_rows(study_on_folder):
    result = study_on_folder
    page = _card(result, "polysemantic: ")
    text = " ".join(page.text)
    assert "img" in page.tags and "data:image/png;base64," in result._repr_html_()
    best = _glance.best_rows(result.rows())
    assert page.classes.count("best") == len(best) >= 1
    assert "held-out" in text and "rings" in text and _glance.BEST_RULE in text


def test_to_pandas_is_the_table(study_on_folder):
    pytest.importorskip("pandas")  # the dev extra installs it; the error path is tested below
    frame = study_on_folder.to_pandas()
    assert list(frame["method"]) == [r["method"] for r in study_on_folder.rows()]
    assert {"kept", "auroc_held_out", "n_held_out"} <= set(frame.columns)


def test_to_pandas_without_pandas_says_how_to_get_it(study_on_folder, monkeypatch):
    real = builtins.__import__

    def no_pandas(name: str, *args: Any, **kwargs: Any) -> object:
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"pip install 'polyprune\[pandas\]'"):
        study_on_folder.to_pandas()


def test_every_part_of_a_study_reads_short(study_on_folder):
    result = study_on_folder
    sub = result.subnetworks["snip"][0]
    ev = result.evaluations["snip"]
    for obj, start in [
        (result.clustering, "Clustering(polysemantic: "),
        (result.top, "TopActivations(top-40 of features.6[0]"),
        (sub, "Subnetwork(snip for features.6[0]"),
        (sub.masks, "Masks("),
        (ev, "Evaluation(features.6[0]"),
        (ev.clusters[0], "ClusterEvaluation(cluster 0: "),
    ]:
        text = repr(obj)
        assert text.startswith(start) and len(text) < 300 and "\n" not in text, text
        assert "tensor(" not in text and "array(" not in text
    _card(result.clustering, "polysemantic: 2 cluster(s)")
    _card(result.top, "top-40 of features.6[0]")
    _card(sub, "keeps ")
    _card(sub.masks, "keeps ")
    _card(ev, "subnetworks of features.6[0]")


def test_a_scan_card_and_frame():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    result = pp.scan(net, "0", torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                     k=20, progress=False)  # fmt: skip
    page = _card(result, f"of {len(result)} channels polysemantic")
    assert page.tags.count("tr") == 1 + len(result)  # header + one row per channel (≤ 10)
    pytest.importorskip("pandas")
    assert list(result.to_pandas()["channel"]) == [r["channel"] for r in result.table()]


def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {"cluster": 0, "kept": 0.05, "auroc_after": 0.9, "auroc_held_out": 0.8,
                              "act_kept": 0.7, "n_held_out": 20, "flags": []}  # fmt: skip
    return {**row, **changes}


def test_flags_name_inverted_dead_degenerate_and_few_held_out():
    assert _glance.row_flags(_row()) == []
    assert _glance.row_flags(_row(auroc_held_out=0.04)) == ["inverted"]
    assert _glance.row_flags(_row(auroc_held_out=None, auroc_after=0.3)) == ["inverted"]
    assert _glance.row_flags(_row(act_kept=0.0)) == ["dead"]
    assert _glance.row_flags(_row(flags=["empty"], act_kept=0.0)) == ["empty"]
    assert _glance.row_flags(_row(n_held_out=3)) == ["few held-out"]
    assert set(_glance.FLAGS) >= {"inverted", "dead", "empty", "constant", "few held-out"}


def test_the_best_row_is_the_unflagged_one_with_the_highest_held_out_auroc():
    rows = [
        _row(method="a", auroc_held_out=0.95, kept=0.2),
        _row(method="b", auroc_held_out=0.95, kept=0.1),  # tie: fewer weights wins
        _row(method="c", auroc_held_out=0.99, act_kept=-1.0),  # dead: never best
        _row(method="d", cluster=1, auroc_held_out=0.2),  # inverted: cluster 1 has no best
    ]
    best = _glance.best_rows(rows)
    assert set(best) == {0} and best[0]["method"] == "b"


def test_composition_counts_each_clusters_folders():
    paths = ["d/rings/1.png", "d/rings/2.png", "d/dots/3.png", "d/dots/4.png", "d/x/5.png"]
    got = _glance.composition(paths, [0, 0, 1, 1, -1])
    assert got == {0: [("rings", 2)], 1: [("dots", 2)], -1: [("x", 1)]}
    assert _glance.composition_text([("rings", 3), ("dots", 1)]) == "rings 3 (75%), dots 1 (25%)"
    assert _glance.composition(None, [0]) == {}
