"""The study and scan reports answer first: verdict, clusters and best subnetworks, flags, glossary;
one static page (no script) whose images all exist."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets, transforms

import polyprune as pp
from polyprune import _glance, plot, zoo
from polyprune._scan_report import SCAN_COLUMNS


class _Sections(HTMLParser):
    """The text of every ``<section class=...>``, the images, scripts and table rows."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.sections: dict[str, list[str]] = {}
        self.order: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.best_rows = 0
        self.terms: list[str] = []
        self._in_dt = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.stack.append(a.get("class") or "")
            self.order.append(self.stack[-1])
        self.images += [a["src"] or ""] if tag == "img" else []
        self.scripts += tag == "script"
        self.best_rows += tag == "tr" and a.get("class") == "best"
        self._in_dt = tag == "dt"

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.stack.pop()
        self._in_dt = False if tag == "dt" else self._in_dt

    def handle_data(self, data: str) -> None:
        for name in self.stack:
            self.sections.setdefault(name, []).append(data)
        if self._in_dt and "glossary" in self.stack:
            self.terms.append(data)

    def text(self, section: str) -> str:
        return " ".join(self.sections.get(section, []))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[pp.results.StudyResult, Path]:
    tmp = tmp_path_factory.mktemp("report")
    root = zoo.write_image_folder(tmp / "data", 30, ("rings", "hstripes", "dots"), size=32, seed=2)
    data = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    model, _ = zoo.planted_network()
    result = pp.study(model, pp.Unit(*zoo.PLANTED_TARGET), data, k=40,
                      methods=["snip", "actgrad"], progress=False)  # fmt: skip
    return result, result.save(tmp / "study")


def test_the_page_opens_with_the_verdict_clusters_and_best_subnetworks(report):
    result, path = report
    page = _Sections(path.read_text())
    assert page.order[0] == "verdict" and page.order.index("glossary") > 0
    verdict = page.text("verdict")
    assert verdict.strip().startswith("polysemantic: 2 clusters") and "p = " in verdict
    assert "image folders" in verdict and ("rings" in verdict or "hstripes" in verdict)
    best = _glance.best_rows(result.rows())
    for label, row in best.items():
        assert f"{row['method']} (AUROC" in verdict, (label, verdict)
    assert page.best_rows == len(best)
    assert _glance.BEST_RULE in page.text("subnetworks")


def test_every_flag_shown_is_explained_and_every_column_is_in_the_glossary(report):
    result, path = report
    page = _Sections(path.read_text())
    shown = {f for r in result.rows() for f in _glance.row_flags(r)}
    text = page.text("subnetworks")
    for flag in shown:
        assert _glance.FLAGS[flag] in text, flag
    for _, header, _ in pp._study_view.ROW_COLUMNS:
        assert header in page.terms, header
    for term in ("d′ after", "r", "rel.err", "act.kept", "kept", "held-out"):
        assert term in page.terms


def test_one_static_page_whose_images_exist(report):
    _, path = report
    page = _Sections(path.read_text())
    assert page.scripts == 0
    files = [src for src in page.images if not src.startswith("data:")]
    assert {"crops.png", "histograms.png", "kept.png"} <= set(files)
    assert all((path.parent / src).stat().st_size > 0 for src in files)


def test_histograms_are_small_multiples_with_one_x_axis_and_whole_counts(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    seen: list[Figure] = []

    def save(fig: Figure, p: str, *_: object) -> Path:
        seen.append(fig)
        return Path(p)

    monkeypatch.setattr(plot, "_save", save)
    gen = torch.Generator().manual_seed(0)
    panels = {name: torch.randn(30, generator=gen) * (i + 1) for i, name in
              enumerate(["original", "a → 0", "a → 1", "b → 0", "b → 1"])}  # fmt: skip
    labels = np.array([0] * 14 + [1] * 14 + [-1] * 2)
    plot.histograms(panels, labels, tmp_path / "h.png", columns=2, title="t")
    axes = seen[0].axes
    assert len(axes) == 5
    assert len({ax.get_xlim() for ax in axes}) == 1  # one x scale for every panel
    rows = {round(ax.get_position().y0, 3) for ax in axes}
    assert len(rows) == 3  # the original alone, then one row per method
    for ax in axes:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert all(float(t).is_integer() for t in ticks), ticks


def test_the_scan_page_links_a_study_command_for_each_top_channel(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    result = pp.scan(net, "0", x, k=20, progress=False)
    page = result.save(tmp_path / "scan").read_text()
    parsed = _Sections(page)
    assert parsed.order[0] == "verdict" and "channels polysemantic" in parsed.text("verdict")
    for row in result.table()[:4]:
        assert f"polyprune study --model MODEL --layer 0 --unit {row['channel']}" in page
    for _, header, _ in SCAN_COLUMNS:
        assert header in parsed.terms or header in ("rank", "unit", "flags"), header
    assert parsed.scripts == 0
