"""Figures of a study, drawn with matplotlib's object API (no pyplot state, any backend).

Each function saves one figure to ``path`` (PNG, or any format matplotlib knows from the suffix)
and returns the path. A save never changes a file polyprune did not write: an existing file at
``path`` is replaced only with ``overwrite=True`` and only when it is a figure of these functions
(PNG, PDF, SVG, PS and EPS figures say so in their metadata; a file of another format is never
replaced), checked before anything is drawn; the write is atomic (a temporary file renamed over
``path``), so a save that fails or is killed leaves an earlier figure whole. Missing parent
folders are created.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from . import _validate as valid
from ._data import as_images
from ._files import atomic_write, check_file_target
from .masks import Masks

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["crops", "histograms", "images", "kept_per_layer"]


def _to_hwc(image: Tensor) -> NDArray[Any]:
    x = image.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:  # show any range by rescaling per image
        x = (x - lo) / (hi - lo if hi > lo else 1.0)
    array: NDArray[Any] = x.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def _figure(figsize: tuple[float, float], layout: Literal["constrained"] | None = None) -> Figure:
    from matplotlib.figure import Figure  # imported here: keeps `import polyprune` light

    return Figure(figsize=figsize, layout=layout)


#: What a figure's metadata say made it (its "Creator"): how a later save knows its own.
_CREATOR = "polyprune.plot"
#: The formats whose metadata can say so (matplotlib takes none for the others).
_MARKED = frozenset({"png", "pdf", "svg", "ps", "eps"})
#: Larger files are not figures of these functions (none is read whole to find out).
_LARGEST = 256 << 20


def _kind(out: Path) -> str:
    """The figure format of ``out``, as matplotlib infers it from the suffix."""
    import matplotlib
    from matplotlib.backend_bases import FigureCanvasBase

    kind = out.suffix[1:].lower() or str(matplotlib.rcParams["savefig.format"])
    known = FigureCanvasBase.get_supported_filetypes()
    if kind not in known:
        raise ValueError(
            f"path {os.fspath(out)!r} ends in .{kind}, a format matplotlib does not write: give "
            f"a path ending in one of {', '.join('.' + k for k in sorted(known))} (.png)"
        )
    return kind


def _is_figure(path: Path) -> bool:
    """Whether ``path`` is a figure these functions wrote (its metadata name them)."""
    try:
        if path.stat().st_size > _LARGEST:
            return False
        return _CREATOR.encode() in path.read_bytes()
    except OSError:
        return False


def _target(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """``path`` checked before any drawing: a figure format, and nothing there or, with
    ``overwrite``, a figure of these functions; missing parent folders are made at the save."""
    out = valid.path("path", path)
    overwrite = valid.flag("overwrite", overwrite)
    _kind(out)
    existing = next(p for p in (out, *out.parents) if p.exists() or p.is_symlink())
    if existing in (out, out.parent):
        check_file_target(out, "figure", overwrite=overwrite, same_kind=_is_figure)
    elif not existing.is_dir():
        raise ValueError(f"cannot save the figure to {os.fspath(out)!r}: {existing} is a file")
    return out


def _save(fig: Figure, path: Path, overwrite: bool) -> Path:
    """Save ``fig`` to ``path`` atomically (a killed save leaves an earlier figure whole)."""
    _target(path, overwrite)  # again: drawing took time
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = _kind(path)
    metadata = {"Creator": _CREATOR} if kind in _MARKED else None
    atomic_write(
        path,
        lambda f: fig.savefig(f, format=kind, dpi=110, bbox_inches="tight", metadata=metadata),
    )
    return path


def crops(
    images: Tensor,
    labels: Tensor | NDArray[Any] | Sequence[int],
    path: str | os.PathLike[str],
    *,
    per_cluster: int = 8,
    sizes: Mapping[int, int] | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """A grid with one row of top-activating crops per cluster (noise, label -1, last).

    Each row's title gives its cluster's size: ``sizes[label]`` when given (e.g. when
    ``images`` hold only the crops to show of larger clusters), else the count of ``label`` in
    ``labels``.
    """
    out = _target(path, overwrite)
    as_images(images, "images")
    valid.integer("per_cluster", per_cluster, low=1)
    y = valid.vector("labels", labels, what="cluster labels").numpy()
    rows = sorted({int(v) for v in y}, key=lambda v: (v < 0, v))
    fig = _figure((1.3 * per_cluster, 1.4 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), per_cluster, squeeze=False)
    for r, label in enumerate(rows):
        idx = np.flatnonzero(y == label)[:per_cluster]
        for c in range(per_cluster):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(idx):
                ax.imshow(_to_hwc(images[int(idx[c])]), cmap="gray")
        name = "noise" if label < 0 else f"cluster {label}"
        size = sizes[label] if sizes is not None else int((y == label).sum())
        axes[r][0].set_title(f"{name} ({size})", fontsize=12, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, out, overwrite)


def histograms(
    panels: Mapping[str, Tensor],
    labels: Tensor | NDArray[Any],
    path: str | os.PathLike[str],
    *,
    bins: int = 30,
    title: str | None = None,
    columns: int | None = None,
    overwrite: bool = False,
) -> Path:
    """The paper's Figure 4: one panel per network, the unit's activations per cluster.

    ``panels`` maps a panel title (e.g. ``"original"``, ``"cs → cluster 0"``) to the unit's
    activation on every image; ``labels`` gives each image's cluster (-1: noise, not drawn).
    Every panel shares one x axis (the same bins and range) and counts images in whole numbers.
    With ``columns`` the panels are small multiples on a grid: the first (the original
    network) on a row of its own, then ``columns`` panels per row (one row per method, one
    column per cluster); without, one column.
    """
    from matplotlib.ticker import MaxNLocator

    out = _target(path, overwrite)
    valid.integer("bins", bins, low=1)
    valid.mapping(
        "panels", panels, "a dict of panel title → activations", of=Tensor, each="a tensor"
    )
    y = valid.vector("labels", labels, what="cluster labels").numpy()
    clusters = sorted(int(v) for v in set(y.tolist()) if v >= 0)
    values = {name: v.detach().float().cpu().numpy() for name, v in panels.items()}
    drawn = [v[y >= 0] if (y >= 0).any() else v for v in values.values()]
    edges: Any = np.histogram_bin_edges(np.concatenate(drawn) if drawn else np.zeros(1), bins=bins)
    across = columns or 1
    places = [(0, 0)] + [(1 + i // across, i % across) for i in range(len(values) - 1)]
    if not columns:
        places = [(i, 0) for i in range(len(values))]
    rows = 1 + max(r for r, _ in places)
    fig = _figure((max(5.0, 2.9 * across + 1.6), 1.55 * rows + 0.9), layout="constrained")
    grid = fig.add_gridspec(rows, across)
    first = None
    for (name, v), (r, c) in zip(values.items(), places, strict=True):
        ax = fig.add_subplot(grid[r, c], sharex=first)
        first = first or ax
        for label in clusters:
            ax.hist(v[y == label], bins=edges, alpha=0.55, color=f"C{label % 10}",
                    label=f"cluster {label}")  # fmt: skip
        ax.set_title(name, fontsize=8, loc="left")
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(labelsize=7)
        if c == 0:
            ax.set_ylabel("images", fontsize=8)
        if first is ax and clusters:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.supxlabel("unit activation (one scale for every panel)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out, overwrite)


def kept_per_layer(
    masks: Mapping[str, Masks],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Grouped bars: the kept fraction of every layer, one bar per subnetwork."""
    out = _target(path, overwrite)
    valid.mapping("masks", masks, "a dict of title → Masks", of=Masks, each="a polyprune.Masks")
    layers = list(dict.fromkeys(name for m in masks.values() for name in m))
    fig = _figure((max(5.0, 0.9 * len(layers) + 2) + 2.0, 3.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(masks))
    for k, (name, m) in enumerate(masks.items()):
        fractions = m.layer_kept_fractions()
        ax.bar(
            np.arange(len(layers)) + k * width,
            [fractions.get(layer, np.nan) for layer in layers],
            width=width,
            label=f"{name} ({m.kept_fraction():.1%})",
        )
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax.set_xticklabels([layer.removesuffix(".weight") for layer in layers], rotation=30)
    ax.set_ylabel("kept fraction")
    ax.set_yscale("log")
    # outside the axes: with a log scale there is no empty corner to put it in
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out, overwrite)


def images(
    images: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Images side by side with their names (e.g. visualizations before and after pruning)."""
    out = _target(path, overwrite)
    valid.mapping("images", images, "a dict of title → images", of=Tensor, each="a tensor")
    fig = _figure((2.2 * len(images), 2.5))
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, (name, image) in zip(axes, images.items(), strict=True):
        ax.imshow(_to_hwc(image[0] if image.dim() == 4 else image), cmap="gray")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, out, overwrite)
