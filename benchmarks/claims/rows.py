"""The rows of a run: one :class:`FitRow` per subnetwork, one :class:`PairRow` per pair of one
case's subnetworks fitted the same way, one :class:`ClusteringRow` per case; :class:`Results`
holds them with the :class:`~benchmarks.claims.config.Config` of the run.

Every verdict and table is computed from these rows alone. ``--json`` writes
:meth:`Results.to_dict`: each row as ``dataclasses.asdict``, except that the fields measured
against the planted truth (``PLANTED_ONLY``) are left out where there is no truth, as in the
dict rows of earlier versions, so old JSON files stay comparable and load with
:meth:`Results.from_dict`. Fields added later (``loss``, ``rel_err_held``, ``act_kept_held``,
``true_kept``, ``roc_auc``, ``roc_tpr``, ``seconds``) have defaults: rows of earlier JSON load
with ``loss="separate"`` (all their CS fits used the paper's objective) and None for the rest.
"""

from __future__ import annotations

from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from .config import Config, as_tuples

__all__ = ["ClusteringRow", "FitRow", "Fitted", "PairRow", "Results"]

_Row = TypeVar("_Row", bound="_JSONRow")


class _JSONRow:
    """JSON conversion shared by the rows (``PLANTED_ONLY``: dropped from JSON when None)."""

    PLANTED_ONLY: ClassVar[tuple[str, ...]] = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # every row is a dataclass

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` without the planted-only fields that are None."""
        data = asdict(self)
        for name in self.PLANTED_ONLY:
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_dict(cls: type[_Row], data: dict[str, Any]) -> _Row:
        """A row from :meth:`to_dict`'s output or its JSON (lists become tuples)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
        return cls(**{k: as_tuples(v) for k, v in data.items()})


@dataclass(frozen=True)
class Fitted(_JSONRow):
    """How a subnetwork was fitted: the case, and the method at one setting of one grid.

    ``grid`` is one of

    - ``"keep"``: a scorer at a keep (``setting``: the keep);
    - ``"lam"``: CS with the paper's objective (``loss="separate"``) at ``setting`` = λ;
    - ``"matched"``: a scorer at the kept fraction of the paper's CS, cluster by cluster
      (``setting``: that CS's λ);
    - ``"objective"``: CS with another objective (the row's ``loss``) at ``setting`` = λ;
    - ``"matched-objective"``: a scorer at the kept fraction of CS with objective ``loss`` at
      ``setting`` = λ, cluster by cluster;
    - ``"truth"``: the planted circuit of the cluster's concept itself (method ``"truth"``,
      ``setting`` 0), a reference.

    ``loss`` is the CS objective the row refers to: the paper's ``"separate"`` unless the grid
    is ``"objective"`` or ``"matched-objective"`` (keyword-only, with that default: rows of
    earlier versions, which had no such field, were all the paper's).
    """

    case: str
    family: str
    seed: int
    method: str
    grid: str
    setting: float
    loss: str = field(default="separate", kw_only=True)


@dataclass(frozen=True)
class FitRow(Fitted):
    """One subnetwork (one cluster of one case, one method and setting) and its measures."""

    PLANTED_ONLY: ClassVar[tuple[str, ...]] = (
        "precision",
        "recall",
        "f1",
        "eff_f1",
        "true_kept",
    )

    cluster: int
    concept: str  # the cluster's majority concept
    kept: float  # DESIGN count: kept / weights that can reach the unit
    paper_kept: float | None  # the paper's count (CS only)
    auroc_before: float  # the original network, fitted crops
    auroc_fit: float  # the subnetwork, fitted crops
    auroc_held: float  # the subnetwork, held-out crops
    dprime_held: float
    r_held: float | None  # Pearson r of subnetwork vs original, the cluster's held-out crops
    out_before: float  # held-out members vs images of other concepts: original network
    out_after: float  # ... and subnetwork
    eff_kept: float  # kept fraction of the effective masks (kernels on an input→unit path)
    precision: float | None = None  # kernel scores against the true circuit (planted only)
    recall: float | None = None
    f1: float | None = None
    eff_f1: float | None = None  # F1 of the effective masks
    # faithfulness on the cluster's held-out crops (pp.evaluate; None in earlier versions' JSON)
    rel_err_held: float | None = None  # ‖a_sub − a‖ / ‖a‖
    act_kept_held: float | None = None  # mean(a_sub) / mean(a)
    true_kept: float | None = None  # kept fraction of the true circuit (planted only)
    # threshold-free kernel recovery from the method's continuous scores (planted only)
    roc_auc: float | None = None
    roc_tpr: tuple[float, ...] | None = None  # true-positive rate at FPR 0, 0.05, ..., 1
    seconds: float | None = None  # wall time of the fit


@dataclass(frozen=True)
class PairRow(Fitted):
    """The overlap of two clusters' subnetworks (same case, method and setting)."""

    PLANTED_ONLY: ClassVar[tuple[str, ...]] = ("shared", "shared_in_circuits")

    clusters: tuple[int, int]
    iou: float
    expected_iou: float  # if each layer's kept elements were drawn independently
    p_value: float  # of an intersection at least as large under independence
    eff_iou: float  # the same on the effective masks (NaN when both are empty)
    eff_expected_iou: float
    eff_p_value: float
    shared: int | None = None  # kernels kept by both (planted only)
    shared_in_circuits: int | None = None  # ... of which in one of the two true circuits


@dataclass(frozen=True)
class ClusteringRow(_JSONRow):
    """One case's clustering of its top-k against the true concepts."""

    PLANTED_ONLY: ClassVar[tuple[str, ...]] = (
        "truth_iou",
        "truth_expected_iou",
        "truth_p",
        "truth_kept",
    )

    case: str
    family: str
    seed: int
    pair: tuple[str, str]  # the two concepts merged in the unit
    k: int
    n_clusters: int
    sizes: tuple[int, ...]
    noise: float
    ari_all: float  # all top-k, noise as one label
    ari: float  # the clustered crops only
    in_pair: float  # share of the top-k in the two concepts
    majority: tuple[tuple[str, float], ...]  # each cluster's majority concept and its share
    truth_iou: float | None = None  # overlap of the two true circuits (planted only)
    truth_expected_iou: float | None = None
    truth_p: float | None = None
    truth_kept: tuple[float, ...] | None = None  # kept fraction of each true circuit


@dataclass
class Results:
    """Every row of a run, with its configuration."""

    config: Config
    clustering: list[ClusteringRow] = field(default_factory=list)
    fits: list[FitRow] = field(default_factory=list)
    pairs: list[PairRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``--json`` writes)."""
        return {
            "config": asdict(self.config),
            "clustering": [r.to_dict() for r in self.clustering],
            "fits": [r.to_dict() for r in self.fits],
            "pairs": [r.to_dict() for r in self.pairs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        """The inverse of :meth:`to_dict` (also reads the JSON of earlier versions)."""
        return cls(
            Config.from_dict(data["config"]),
            [ClusteringRow.from_dict(r) for r in data["clustering"]],
            [FitRow.from_dict(r) for r in data["fits"]],
            [PairRow.from_dict(r) for r in data["pairs"]],
        )
