"""polyprune: find polysemantic units in CNNs and cut out one sparse subnetwork per meaning.

The public API is listed in ``__all__``; everything else is private.

Examples
--------
>>> import polyprune as pp
>>> sorted(pp.__all__)[:4]
['ActGrad', 'ActivationRecorder', 'ClusterEvaluation', 'Clustering']
"""

from __future__ import annotations

from . import zoo
from .clustering import Clustering, cluster
from .evaluation import (
    ClusterEvaluation,
    Evaluation,
    Overlap,
    Separation,
    evaluate,
    held_out_split,
    overlap,
    separation,
)
from .masks import Masks, Scores
from .receptive_field import Crop, ReceptiveField, ReceptiveFieldError
from .recording import ActivationRecorder, TopActivations, top_activating
from .scoring import FORCE, SNIP, ActGrad, Magnitude, Random, Scorer
from .sparsify import ContinuousSparsifier, ExponentialTemperature
from .study import StudyResult, study
from .subnetwork import PAPER_SETTINGS, Subnetwork, fit_subnetwork
from .targets import Objective, Unit
from .visualization import (
    plot_crops,
    plot_histograms,
    plot_images,
    plot_kept_per_layer,
    visualize,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "FORCE",
    "PAPER_SETTINGS",
    "SNIP",
    "ActGrad",
    "ActivationRecorder",
    "ClusterEvaluation",
    "Clustering",
    "ContinuousSparsifier",
    "Crop",
    "Evaluation",
    "ExponentialTemperature",
    "Magnitude",
    "Masks",
    "Objective",
    "Overlap",
    "Random",
    "ReceptiveField",
    "ReceptiveFieldError",
    "Scorer",
    "Scores",
    "Separation",
    "StudyResult",
    "Subnetwork",
    "TopActivations",
    "Unit",
    "__version__",
    "cluster",
    "evaluate",
    "fit_subnetwork",
    "held_out_split",
    "overlap",
    "plot_crops",
    "plot_histograms",
    "plot_images",
    "plot_kept_per_layer",
    "separation",
    "study",
    "top_activating",
    "visualize",
    "zoo",
]
