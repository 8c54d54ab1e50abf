"""`polyprune demo`: the README's first command writes a report with figures for every zoo case."""

from __future__ import annotations

from pathlib import Path

from polyprune.cli import main
from polyprune.results import StudyResult

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_reports_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "polyprune-demo"
    assert main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed, log = captured.out, captured.err
    # stderr is not a terminal here: plain stage lines, no redraws, no cursor escapes
    assert "\r" not in log and "\x1b" not in log
    assert all(line.startswith("[polyprune] ") for line in log.splitlines()), log
    assert "[polyprune] demo 3/3: digits-merged" in log and "top-300 of features.6[0]: " in log
    for case in ("planted", "concepts-merged", "digits-merged"):
        assert f"== {case}: unit" in printed
        for figure in ("crops.png", "histograms.png", "kept.png", "report.html", "results.json"):
            assert (out / case / figure).stat().st_size > 0, (case, figure)
    assert "circuit P/R" in printed and "→ polysemantic" in printed
    cases = {part.split(":")[0]: part for part in printed.split("== ")[1:]}
    rows = {
        case: [line.split() for line in part.splitlines() if line.startswith("   ")]
        for case, part in cases.items()
    }  # method, cluster, kept, AUROC before→after, held-out AUROC[, circuit P/R]
    scorers = [r for part in rows.values() for r in part if r[0] in ("actgrad", "snip", "force")]
    assert len(scorers) == 18  # 3 cases × 3 scorers × 2 clusters, each at 5 % on kept paths
    assert all(5.0 <= float(r[2].rstrip("%")) < 10.0 for r in scorers), scorers
    inverted = [r for r in rows["planted"] if r[:2] == ["actgrad", "1"]]  # the README caption
    assert len(inverted) == 1 and float(inverted[0][4]) < 0.5
    _check_the_readme_caption(out / "planted", cases["planted"])
    page = (out / "planted" / "report.html").read_text()  # the ground truth on its own page
    assert page.index('class="verdict"') < page.index("Ground truth") < page.index("circuit P/R")
    index = (out / "report.html").read_text()
    assert all(f'href="{case}/report.html"' in index for case in ("planted", "digits-merged"))


def _check_the_readme_caption(planted: Path, table: str) -> None:
    """What the README's caption under the planted demo's figures says (apart from the scorers'
    5 % and ActGrad's inverted subnetwork, checked on the table above)."""
    assert "cluster 0 = rings" in table and "cluster 1 = hstripes" in table
    result = StudyResult.load(planted)
    assert all(0.35 <= row["auroc_before"] <= 0.65 for row in result.rows())  # about equally
    labels = result.clustering.labels

    def means(method: str, cluster: int) -> tuple[float, float]:
        """Mean activation under the subnetwork on its cluster, and on the other cluster."""
        (panel,) = [
            a
            for k, a in result.activations.items()
            if k.startswith(f"{method} → cluster {cluster} ")
        ]
        return float(panel[labels == cluster].mean()), float(panel[labels == 1 - cluster].mean())

    for cluster in (0, 1):  # CS keeps its cluster near 1 and silences the other
        own, other = means("cs", cluster)
        assert 0.8 <= own <= 1.2 and abs(other) < 0.2, (cluster, own, other)
    for scorer in ("actgrad", "snip", "force"):  # for cluster 1, no scorer silences the rings
        assert means(scorer, 1)[1] > 0.3, scorer


def test_readme_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 6]
    commands = [line for line in block if line and not line.startswith("#")]
    assert commands[0].endswith("polyprune demo") and "-c constraints.txt" in commands[0]
    assert commands[1] == "pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npytest\n" in ci and commands[0].split(" && ")[2] in ci
