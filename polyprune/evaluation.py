"""How well does each cluster's subnetwork separate its cluster from the others?

For a polysemantic unit with clusters ``0..K-1`` and one subnetwork (:class:`Masks`) per cluster:

- **separation** of the unit's activation on the cluster's images vs the other clusters' images
  (AUROC and d′), before (original network) and after (the cluster's subnetwork), on the images
  the subnetwork was fitted on and on held-out images of the same clusters;
- **faithfulness** on the cluster's images: does the subnetwork compute what the unit computes
  there? **Pearson r** between the subnetwork's and the original network's activations
  (Hamblin et al.'s preservation measure: shape only, blind to scale and offset), the
  **relative error** ``‖a_sub − a‖ / ‖a‖`` and the **fraction of the activation kept**
  ``mean(a_sub) / mean(a)``;
- **overlap** of the subnetworks of two clusters: IoU, the IoU expected if the masks were
  independent at the same kept counts, and a p-value for "they share more than independence
  predicts" (the paper's independence hypothesis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from . import _glance
from . import _validate as valid
from ._circuits import CircuitScores, circuit_scores
from ._data import as_images
from ._graph.regions import unit_regions
from ._measures import Overlap, Separation, faithfulness, overlap, separation
from ._unit_io import unit_activations
from .masks import Masks
from .targets import Unit

__all__ = [
    "CircuitScores",
    "ClusterEvaluation",
    "Evaluation",
    "Overlap",
    "Separation",
    "circuit_scores",
    "evaluate",
    "faithfulness",
    "held_out_split",
    "overlap",
    "separation",
]


def held_out_split(
    labels: Tensor | NDArray[Any], fraction: float = 0.2, *, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Indices ``(fit, held_out)``: a seeded ``fraction`` of every label's items is held out.

    Every label keeps at least one item on each side when it has two or more.
    """
    y = valid.vector("labels", labels, what="labels")
    valid.fraction("fraction", fraction, one=False)
    valid.seed("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for label in torch.unique(y).tolist():
        idx = (y == label).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_held = (
            min(max(1, round(fraction * idx.numel())), idx.numel() - 1) if idx.numel() > 1 else 0
        )
        held.append(idx[:n_held])
        fit.append(idx[n_held:])
    return torch.sort(torch.cat(fit)).values, torch.sort(torch.cat(held)).values


@dataclass(frozen=True)
class ClusterEvaluation:
    """Evaluation of one cluster's subnetwork (see module docstring).

    Faithfulness, on the cluster's images (fitted, and ``*_held_out``), with ``a`` the original
    network's activations and ``a_sub`` the subnetwork's:

    - ``pearson_r``: Pearson r of ``a_sub`` and ``a``. Blind to scale and offset, and low
      whenever the cluster's activations vary little (top-k crops): even the exact circuit of a
      planted concept scores well below 1 there (``docs/results.md``).
    - ``relative_error``: ``‖a_sub − a‖ / ‖a‖`` (Euclidean norms over the images): 0 when the
      subnetwork reproduces the unit exactly, 1 for a silent subnetwork. Pooled over images, so
      one image with a small activation cannot dominate it (unlike a mean of per-image ratios).
    - ``activation_kept``: ``mean(a_sub) / mean(a)``, the fraction of the unit's mean response
      the subnetwork keeps (1: all, > 1: it fires more than the unit). NaN when ``mean(a)`` is 0.

    ``flags`` names what makes the numbers meaningless, if anything: ``"empty"`` (the
    subnetwork keeps no weight that can reach the unit) and ``"constant"`` (the unit's
    activation under the subnetwork is the same on every evaluated image, so AUROC is 0.5 and
    r undefined by construction).
    """

    label: int
    kept_fraction: float
    before: Separation
    after: Separation
    before_held_out: Separation | None
    after_held_out: Separation | None
    pearson_r: float
    pearson_r_held_out: float | None
    relative_error: float = math.nan
    relative_error_held_out: float | None = None
    activation_kept: float = math.nan
    activation_kept_held_out: float | None = None
    flags: tuple[str, ...] = ()

    def __repr__(self) -> str:
        held = "" if self.after_held_out is None else f", held-out {self.after_held_out.auroc:.2f}"
        return (
            f"ClusterEvaluation(cluster {self.label}: kept {self.kept_fraction:.2%}, AUROC "
            f"{self.before.auroc:.2f} → {self.after.auroc:.2f}{held})"
        )

    def row(self) -> dict[str, Any]:
        """The numbers as one flat row (the row of :meth:`StudyResult.rows
        <polyprune.results.StudyResult.rows>` without its method)."""
        held = self.after_held_out
        return {
            "cluster": self.label, "kept": self.kept_fraction,
            "auroc_before": self.before.auroc, "auroc_after": self.after.auroc,
            "auroc_held_out": held.auroc if held else None,
            "dprime_after": self.after.dprime, "pearson_r": self.pearson_r,
            "rel_error": self.relative_error, "act_kept": self.activation_kept,
            "pearson_r_held_out": self.pearson_r_held_out,
            "rel_error_held_out": self.relative_error_held_out,
            "act_kept_held_out": self.activation_kept_held_out,
            "n_held_out": held.n_members if held else 0, "flags": list(self.flags),
        }  # fmt: skip


_COLUMNS: list[_glance.Column] = [
    ("cluster", "cluster", str), ("kept", "kept", lambda v: _glance.fmt(v, ".1%")),
    *((key, head, _glance.fmt) for key, head in (
        ("auroc_before", "AUROC before"), ("auroc_after", "AUROC after"),
        ("auroc_held_out", "held-out"), ("pearson_r", "r"), ("rel_error", "rel.err"),
        ("act_kept", "act.kept"))),
    ("shown", "flags", str),
]  # fmt: skip


@dataclass(frozen=True)
class Evaluation:
    """Per-cluster evaluations and pairwise overlaps of one unit's subnetworks."""

    unit: Unit
    clusters: dict[int, ClusterEvaluation]
    overlaps: dict[tuple[int, int], Overlap]

    def rows(self) -> list[dict[str, Any]]:
        """One :meth:`ClusterEvaluation.row` per cluster."""
        return [c.row() for c in self.clusters.values()]

    def __repr__(self) -> str:
        parts = [repr(c)[18:-1] for c in self.clusters.values()]
        return f"Evaluation({self.unit}: " + "; ".join(parts) + ")"

    def _repr_html_(self) -> str:
        rows = [{**r, "shown": ", ".join(_glance.row_flags(r))} for r in self.rows()]
        best = {id(r) for r in _glance.best_rows(rows).values()}
        inverted = sum("inverted" in r["shown"] for r in rows)
        verdict = f"{len(rows)} subnetworks of {self.unit}, {inverted} inverted"
        table = _glance.html_table(rows, _COLUMNS, marked=lambda r: id(r) in best)
        return _glance.card("Evaluation", verdict, table)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; :meth:`from_dict` reads it back."""
        return {
            "unit": self.unit.to_dict(),
            "clusters": {str(k): asdict(v) for k, v in self.clusters.items()},
            "overlaps": {f"{a}-{b}": asdict(o) for (a, b), o in self.overlaps.items()},
        }  # fmt: skip

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """The evaluation of :meth:`to_dict` (JSON's ``null`` for NaN reads back as NaN)."""

        def sep(value: Any) -> Separation | None:
            return None if value is None else Separation(**_nan_for_none(value, Separation))

        clusters = {}
        for key, c in data["clusters"].items():
            values = _nan_for_none(c, ClusterEvaluation)
            for name in ("before", "after", "before_held_out", "after_held_out"):
                values[name] = sep(values.get(name))
            values["flags"] = tuple(values.get("flags", ()))
            clusters[int(key)] = ClusterEvaluation(**values)
        overlaps = {
            (int(k.split("-")[0]), int(k.split("-")[1])): Overlap(**_nan_for_none(o, Overlap))
            for k, o in data["overlaps"].items()
        }
        return cls(Unit.from_dict(data["unit"]), clusters, overlaps)


def _nan_for_none(values: Mapping[str, Any], kind: type) -> dict[str, Any]:
    """``values`` for the dataclass ``kind``: ``None`` back to NaN where the field is a float."""
    out = {}
    for f in fields(kind):
        if f.name in values:
            value = values[f.name]
            out[f.name] = math.nan if value is None and f.type == "float" else value
    return out


def evaluate(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    labels: Tensor | NDArray[Any],
    subnetworks: Mapping[int, Masks | Any],
    *,
    held_out: tuple[Tensor, Tensor | NDArray[Any]] | None = None,
    negatives: Literal["clusters", "all"] = "clusters",
    batch_size: int = 64,
) -> Evaluation:
    """Evaluate each cluster's subnetwork on ``images`` (and ``held_out`` images, if given).

    Parameters
    ----------
    images, labels
        The images the subnetworks were fitted on (e.g. the unit's top-k receptive-field crops)
        and their cluster labels (``-1`` = noise).
    subnetworks
        Cluster label → :class:`Masks` (or anything with a ``masks`` attribute, such as a
        ``Subnetwork``).
    held_out
        ``(images, labels)`` not used for fitting.
    negatives
        ``"clusters"`` (default, the paper's setting): a cluster is compared with the other
        clusters' images, noise excluded; ``"all"``: with every other image, noise included.
    """
    valid.model("model", model)
    valid.instance("unit", unit, Unit, "a polyprune.Unit")
    valid.integer("batch_size", batch_size, low=1)
    if negatives not in ("clusters", "all"):
        raise ValueError(f"negatives must be 'clusters' or 'all', got {negatives!r}")
    valid.instance("subnetworks", subnetworks, Mapping, "a dict of cluster label → Masks")
    if held_out is not None and (not isinstance(held_out, tuple | list) or len(held_out) != 2):
        raise valid.ArgumentTypeError(f"held_out must be a pair (images, labels), got {held_out!r}")
    masks = {
        valid.integer("subnetworks label", k): getattr(v, "masks", v)
        for k, v in subnetworks.items()
    }
    if not masks or not all(isinstance(m, Masks) for m in masks.values()):
        raise ValueError("subnetworks must map cluster labels to Masks (or Subnetworks)")
    what = "cluster labels (-1: noise)"
    sets = [(as_images(images), valid.vector("labels", labels, what=what))]
    if held_out is not None:
        held_images = as_images(held_out[0], "held_out images")
        sets.append((held_images, valid.vector("held_out labels", held_out[1], what=what)))
    for label, value in subnetworks.items():
        _check_fitted_for(model, unit, int(label), value)
    for x, y in sets:
        if x.dim() != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"images {tuple(x.shape)} and labels {tuple(y.shape)} do not align")
    missing = [k for k in masks if not bool((sets[0][1] == k).any())]
    if missing:
        raise ValueError(
            f"no image has label(s) {missing}; labels present: {sorted(set(sets[0][1].tolist()))}"
        )
    original = [unit_activations(model, unit, x, None, batch_size) for x, _ in sets]
    subnets = {
        label: [unit_activations(model, unit, x, m, batch_size) for x, _ in sets]
        for label, m in masks.items()
    }
    return evaluate_activations(unit, masks, [y for _, y in sets], original, subnets, negatives)


def _check_fitted_for(model: nn.Module, unit: Unit, label: int, value: Any) -> None:
    """Refuse a subnetwork fitted for another unit: by the unit it names (a Subnetwork's, or
    its masks'), else by its masks' regions, which differ from one unit to another."""
    masks: Masks = getattr(value, "masks", value)
    own = getattr(value, "unit", None) or masks.unit
    if isinstance(own, Unit):
        if (own.layer, own.channel) != (unit.layer, unit.channel):
            raise ValueError(
                f"subnetworks[{label}] was fitted for {own.layer}[{own.channel}], not for the "
                f"unit evaluated, {unit.layer}[{unit.channel}]: pass the subnetworks of that unit"
            )
        return
    if not masks.regions:
        return  # nothing to compare: hand-made masks
    _, regions = unit_regions(model, unit.layer, unit.channel, masks.granularity)
    wrong = [
        n for n, r in masks.regions.items() if n not in regions or not torch.equal(regions[n], r)
    ]
    if wrong:
        raise ValueError(
            f"subnetworks[{label}]'s regions (the weights that can reach its unit) differ from "
            f"those of {unit.layer}[{unit.channel}] at {wrong[0]!r}: the masks were made for "
            "another unit (or model)"
        )


def evaluate_activations(
    unit: Unit,
    masks: Mapping[int, Masks],
    labels: Sequence[Tensor],
    original: Sequence[Tensor],
    subnets: Mapping[int, Sequence[Tensor]],
    negatives: str = "clusters",
) -> Evaluation:
    """:func:`evaluate` from the unit's activations already computed, one tensor per image set
    (what :func:`polyprune.study` does: it reads every activation once). Internal API, not in
    ``__all__``: its arguments are not validated, :func:`evaluate` is the checked entry.

    ``labels[s]``, ``original[s]`` (the dense model's activations) and ``subnets[label][s]``
    (with cluster ``label``'s masks applied) belong to image set ``s``: the fitted images
    first, then (optionally) the held-out ones. ``masks`` (cluster label → :class:`Masks`) give
    the kept fractions and the overlaps; ``negatives`` as for :func:`evaluate`.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> from polyprune.evaluation import evaluate_activations
    >>> masks = {c: pp.Masks({"0.weight": torch.tensor([[c == 0], [c == 1]])}, "kernel")
    ...          for c in (0, 1)}
    >>> labels, original = [torch.tensor([0, 0, 1, 1])], [torch.tensor([3.0, 2.0, 0.0, 1.0])]
    >>> after = {0: [torch.tensor([3.0, 2.0, 0.0, 0.0])], 1: [torch.tensor([0.0, 0.0, 1.0, 1.0])]}
    >>> ev = evaluate_activations(pp.Unit("0", 0), masks, labels, original, after)
    >>> ev.clusters[0].after.auroc, ev.clusters[1].kept_fraction
    (1.0, 0.5)
    """
    results: dict[int, ClusterEvaluation] = {}
    for label, m in masks.items():
        seps: list[tuple[Separation, Separation, tuple[float, float, float]] | None] = []
        for y, before, after in zip(labels, original, subnets[label], strict=True):
            mine = y == label
            others = (y != label) & ((y >= 0) if negatives == "clusters" else torch.ones_like(mine))
            if not mine.any() or not others.any():
                seps.append(None)
                continue
            seps.append((
                separation(before[mine], before[others]),
                separation(after[mine], after[others]),
                faithfulness(after[mine], before[mine]),
            ))  # fmt: skip
        fit = seps[0]
        if fit is None:
            raise ValueError(f"cluster {label} has no images to compare against")
        held = seps[1] if len(seps) > 1 else None
        everything = torch.cat(list(subnets[label]))
        kept = m.kept_fraction()  # 0 exactly when no weight is kept
        flags = (*(("empty",) if kept == 0 else ()),
                 *(("constant",) if bool((everything == everything[0]).all()) else ()))  # fmt: skip
        results[label] = ClusterEvaluation(
            label=label, kept_fraction=kept, before=fit[0], after=fit[1],
            before_held_out=held[0] if held else None, after_held_out=held[1] if held else None,
            pearson_r=fit[2][0], pearson_r_held_out=held[2][0] if held else None,
            relative_error=fit[2][1], relative_error_held_out=held[2][1] if held else None,
            activation_kept=fit[2][2], activation_kept_held_out=held[2][2] if held else None,
            flags=flags,
        )  # fmt: skip
    labels_sorted = sorted(masks)
    overlaps = {
        (a, b): overlap(masks[a], masks[b])
        for i, a in enumerate(labels_sorted)
        for b in labels_sorted[i + 1 :]
    }
    return Evaluation(unit=unit, clusters=results, overlaps=overlaps)
