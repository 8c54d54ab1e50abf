"""What one run of the claims benchmark does: :class:`Config`, the quick one, the constants that
place its cases (concept pairs of the planted variants, image seeds, scorers) and the thresholds
of the verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    cs_lam: float = 1.0  # fit_subnetwork's default: "CS at its own kept fraction"
    epochs: int = 25
    planted_images: int = 1500
    planted_k: int = 300
    trained_k: int = 100
    held_out: float = 0.2
    outside: int = 400
    force_rounds: int = 10

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The inverse of ``dataclasses.asdict`` (JSON lists back to tuples)."""
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


#: ``--quick``: one seed per case, keeps 50/10/5/1 %, λ = 1 and 3.
QUICK = Config(
    planted_seeds=(0,),
    trained_seeds=(0,),
    keeps=(0.5, 0.1, 0.05, 0.01),
    lams=(1.0, 3.0),
)
