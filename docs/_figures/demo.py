"""Copy the planted case's figures of ``polyprune demo`` into docs/img (README, home page).

Usage::

    python docs/_figures/demo.py [OUT_DIR]

Runs ``polyprune demo`` as a user does (about a minute) into a temporary folder and prints its
summary table (the README's caption describes it; ``tests/test_demo.py`` checks the caption's
claims on its own run). The planted study's report is drawn again with 8 crops per cluster
instead of 16, so the crop grid stays legible at the width of a page, and its ``crops.png`` and
``histograms.png`` become ``demo-planted-crops.png`` and ``demo-planted-histograms.png`` in
OUT_DIR (default: docs/img).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("crops", "histograms")


def draw(out: Path) -> list[Path]:
    from polyprune.cli import main
    from polyprune.results import StudyResult

    with tempfile.TemporaryDirectory(prefix="polyprune-demo-") as tmp:
        if main(["demo", "--out", f"{tmp}/demo", "-qq"]) != 0:
            raise SystemExit("polyprune demo failed")
        planted = StudyResult.load(f"{tmp}/demo/planted")
        report = planted.save(f"{tmp}/planted", crops_per_cluster=8).parent
        out.mkdir(parents=True, exist_ok=True)
        return [
            Path(shutil.copyfile(report / f"{name}.png", out / f"demo-planted-{name}.png"))
            for name in FIGURES
        ]


if __name__ == "__main__":
    for path in draw(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/img"):
        print(path)
