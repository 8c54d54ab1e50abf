"""What one run of the claims benchmark does: :class:`Config`, the quick one, the constants that
place its cases (concept pairs of the planted variants, image seeds, scorers) and the thresholds
of the verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: A CS objective (``pp.CSConfig(loss=...)``): the paper's ``"separate"``, ``"preserve"`` or
#: ``"both"``.
Objective = Literal["both", "preserve", "separate"]
#: The objectives of ``CSConfig(loss=...)``, the paper's first.
OBJECTIVES: tuple[Objective, ...] = ("separate", "preserve", "both")

#: Concept pairs of the planted variants: seed ``s`` uses ``PLANTED_PAIRS[s % 3]``.
PLANTED_PAIRS: tuple[tuple[str, str], ...] = (
    ("hstripes", "rings"),
    ("vstripes", "blobs"),
    ("dstripes", "checker"),
)
#: Seed offset of the planted variants' images (``concept_images(seed=IMAGE_SEED + s)``).
IMAGE_SEED = 1000
#: ``zoo.eval_data("concepts-merged", seed)`` draws ``concept_images(seed=this + seed)``.
CONCEPTS_EVAL_SEED = 2024
#: The scorers fitted at every keep (names of the ``polyprune.scoring`` registry, capitalised).
SCORERS = ("ActGrad", "SNIP", "FORCE", "Magnitude", "Random")
#: Where the full default configuration writes its report.
DOCS = Path(__file__).resolve().parents[2] / "docs"

# The thresholds of the verdicts (benchmarks.claims.verdicts), printed in the report.
#: A subnetwork "separates" (works) when its held-out AUROC is at least this.
SEPARATES = 0.9
#: A method "works" at a keep when more than this fraction of its subnetworks separate.
WORKS = 0.5
#: Mean held-out AUROCs closer than this are a tie (claim 4).
TIE = 0.01
#: Clustering "reveals the concepts" when the ARI of the clustered crops is at least this.
ARI_OK = 0.8
#: The paper's range of CS kept fractions (claim 3).
PAPER_RANGE = (0.03, 0.07)
#: A drop of at least this much AUROC counts as a change of behaviour (claim 5).
CHANGE = 0.05
#: Significance level of "overlaps more than independence" (claim 6).
ALPHA = 0.05
# The goals of issue 15 for a cluster's subnetwork (circuit recovery section, and
# benchmarks.claims.faithful), on planted networks:
#: The planted seeds the objectives' defaults (λ, learning rate of "both", "preserve") were
#: tuned on, with the default pairs, distractors and cross scale.
TUNED_SEEDS = (0, 1, 2)
#: kernel F1 against the true circuit of the cluster's concept at least this,
GOAL_F1 = 0.9
#: held-out AUROC at least this,
GOAL_AUROC = 0.95
#: Pearson r of the subnetwork's activation to the original on held-out members at least this,
GOAL_R = 0.9
#: and a kept fraction at most this times the true circuit's.
GOAL_KEPT = 1.2
#: The paper's heuristic scorers (Magnitude and Random are baselines).
HEURISTICS = ("ActGrad", "SNIP", "FORCE")


@dataclass(frozen=True)
class Config:
    """What one run of the benchmark does (every field is printed in the report)."""

    planted_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    trained: tuple[str, ...] = ("concepts-merged", "digits-merged")
    trained_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    keeps: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    lams: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    cs_lam: float = 1.0  # the paper's objective's default λ: "CS at its own kept fraction"
    # circuit recovery: CS with the other objectives (CSConfig(loss=...)) at these λ; each
    # objective's default λ, if listed, is also matched by every scorer
    objectives: tuple[tuple[Objective, tuple[float, ...]], ...] = (
        ("both", (0.03, 0.1, 0.3)),
        ("preserve", (0.1,)),
    )
    epochs: int = 25
    planted_images: int = 1500
    planted_k: int = 300
    trained_k: int = 100
    held_out: float = 0.2
    outside: int = 400
    force_rounds: int = 10

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The inverse of ``dataclasses.asdict`` (JSON lists back to tuples, at any depth).

        A configuration of earlier versions, which had no ``objectives``, fitted none."""
        values = {"objectives": (), **data}
        return cls(**{k: as_tuples(v) for k, v in values.items()})


def as_tuples(value: Any) -> Any:
    """JSON lists as tuples, at any depth."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, list) else value


#: ``--quick``: one seed per case, keeps 50/10/5/1 %, λ = 1 and 3 (the other objectives: as in
#: the full run).
QUICK = Config(
    planted_seeds=(0,),
    trained_seeds=(0,),
    keeps=(0.5, 0.1, 0.05, 0.01),
    lams=(1.0, 3.0),
)
