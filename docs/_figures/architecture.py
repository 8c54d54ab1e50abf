"""Draw docs/img/architecture.png from the layers contract in pyproject.toml (one source).

Usage::

    python docs/_figures/architecture.py [OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]

#: The name of each layer of the contract, top to bottom (docs/architecture.md explains them).
NAMES = (
    "app: command line",
    "app: demo",
    "pipeline: results",
    "pipelines",
    "pipeline: result types",
    "pipeline: scan report",
    "pipeline: study report",
    "subnetwork, ground truth",
    "methods",
    "method parts",
    "method parts (lower)",
    "method contract, fields",
    "core types",
    "engine",
    "foundation",
    "foundation: ranks",
    "foundation",
    "foundation: argument checks",
)


def layers() -> list[list[str]]:
    """The modules of each layer (top to bottom), as the import-linter contract lists them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = config["tool"]["importlinter"]["contracts"][0]
    return [
        [m.strip().removeprefix("polyprune.") for m in layer.replace("|", ":").split(":")]
        for layer in contract["layers"]
    ]


def _shown(layer: str) -> str:
    """A contract line as the figure shows it: ``|`` between independent siblings, ``:``
    between modules that may import each other."""
    return " ".join(layer.replace("polyprune.", "").split())


def description() -> str:
    """What the figure shows, one ``name: modules`` line per row; stored in the PNG's
    ``Description`` so a test can tell that docs/img/architecture.png is current."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    rows = [_shown(layer) for layer in config["tool"]["importlinter"]["contracts"][0]["layers"]]
    return "\n".join(f"{name}: {modules}" for name, modules in zip(NAMES, rows, strict=False))


def draw(out: Path) -> Path:
    from matplotlib.figure import Figure

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    rows = [_shown(layer) for layer in config["tool"]["importlinter"]["contracts"][0]["layers"]]
    if len(rows) != len(NAMES):
        raise SystemExit(f"the contract has {len(rows)} layers, NAMES {len(NAMES)}: update NAMES")
    fig = Figure(figsize=(10.5, 0.5 * len(rows) + 0.6))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.01, right=0.99)  # the boxes span the figure: larger type
    ax.set_axis_off()
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.5, len(rows))
    labels = []
    for r, name in enumerate(NAMES):
        y = len(rows) - 1 - r
        colour = "#dbe9f6" if name.startswith(("engine", "foundation")) else "#fde8c8"
        if name.startswith(("pipeline", "app")):
            colour = "#d9f2d9"
        elif name.startswith("core"):
            colour = "#f6d5e5"
        ax.add_patch(_box(fig, 0.1, y - 0.4, 9.8, 0.8, colour))
        labels.append(ax.text(0.25, y, name, va="center", fontsize=10, weight="bold"))
    # the modules start right of the widest label (a long label overlapped them)
    fig.draw_without_rendering()
    right = max(label.get_window_extent().x1 for label in labels)
    x = ax.transData.inverted().transform((right, 0))[0] + 0.15
    texts = [
        ax.text(x, len(rows) - 1 - r, modules, va="center", fontsize=9, family="monospace")
        for r, modules in enumerate(rows)
    ]
    fig.draw_without_rendering()
    box_right = ax.transData.transform((9.9, 0))[0]
    spilled = [t.get_text() for t in texts if t.get_window_extent().x1 > box_right]
    if spilled:
        raise SystemExit(f"these rows spill out of their boxes: {spilled}")
    ax.set_title(
        "polyprune's layers: each imports only from the layers below it "
        "(| independent siblings, : may import each other)",
        fontsize=10,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight", metadata={"Description": description()})
    return out


def _box(fig: object, x: float, y: float, w: float, h: float, colour: str) -> object:
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=colour, ec="#888")


if __name__ == "__main__":
    print(draw(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/img/architecture.png"))
