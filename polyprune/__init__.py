"""polyprune: find polysemantic units in CNNs and cut out one sparse subnetwork per meaning.

The top level holds the paper's verbs and main classes; the result types are in
:mod:`polyprune.results`, the figures in :mod:`polyprune.plot`, the one extension point for
methods (:class:`Method`, its registry) in :mod:`polyprune.methods`, the scorers in
:mod:`polyprune.scoring`, measures in :mod:`polyprune.evaluation`, ground truth in
:mod:`polyprune.zoo`. Everything named with a leading
underscore is private. ``docs/architecture.md`` shows how the package is layered.

Examples
--------
>>> import polyprune as pp
>>> sorted(pp.__all__)[:4]
['ActGrad', 'ActivationRecorder', 'CSConfig', 'ContinuousSparsification']
"""

from __future__ import annotations

import warnings
from typing import Any

from . import _startup as _startup  # first: the command line's Ctrl-C guard (see the module)

# Continuous Sparsification registers first: the registry lists "cs" before the scorers
from . import sparsify as sparsify  # isort: skip
from . import evaluation as evaluation  # the namespaces: pp.evaluation.separation, ...
from . import methods as methods
from . import plot as plot
from . import results as results
from . import scoring as scoring

from . import ablation as ablation  # isort: skip  (registered after the scorers)
from . import zoo
from .clustering import cluster
from .evaluation import evaluate
from .masks import Masks
from .methods import Method
from .receptive_field import ReceptiveField
from .recording import ActivationRecorder, top_activating
from .scan import scan
from .scoring import FORCE, SNIP, ActGrad, Magnitude, Random, Scorer
from .sparsify import (
    ContinuousSparsification,
    ContinuousSparsifier,
    CSConfig,
    ExponentialTemperature,
)
from .study import study
from .subnetwork import fit_subnetwork
from .targets import Objective, Unit
from .visualization import visualize

__version__ = "0.3.0.dev0"

__all__ = [
    "FORCE",
    "SNIP",
    "ActGrad",
    "ActivationRecorder",
    "CSConfig",
    "ContinuousSparsification",
    "ContinuousSparsifier",
    "ExponentialTemperature",
    "Magnitude",
    "Masks",
    "Method",
    "Objective",
    "Random",
    "ReceptiveField",
    "Scorer",
    "Unit",
    "__version__",
    "cluster",
    "evaluate",
    "fit_subnetwork",
    "scan",
    "study",
    "top_activating",
    "visualize",
    "zoo",
]

#: Names that left the top level in 0.2: where they live now.
_MOVED = {
    "ClusterEvaluation": "polyprune.results.ClusterEvaluation",
    "Clustering": "polyprune.results.Clustering",
    "Crop": "polyprune.results.Crop",
    "Evaluation": "polyprune.results.Evaluation",
    "Overlap": "polyprune.results.Overlap",
    "ReceptiveFieldError": "polyprune.receptive_field.ReceptiveFieldError",
    "Scores": "polyprune.results.Scores",
    "Separation": "polyprune.results.Separation",
    "StudyResult": "polyprune.results.StudyResult",
    "Subnetwork": "polyprune.results.Subnetwork",
    "TopActivations": "polyprune.results.TopActivations",
    "held_out_split": "polyprune.evaluation.held_out_split",
    "overlap": "polyprune.evaluation.overlap",
    "separation": "polyprune.evaluation.separation",
    "plot_crops": "polyprune.plot.crops",
    "plot_histograms": "polyprune.plot.histograms",
    "plot_images": "polyprune.plot.images",
    "plot_kept_per_layer": "polyprune.plot.kept_per_layer",
}


def __getattr__(name: str) -> Any:
    """The names that moved in 0.2 still resolve, with a DeprecationWarning saying where."""
    import importlib

    if name == "PAPER_SETTINGS":
        warnings.warn(
            "polyprune.PAPER_SETTINGS is gone: use config=polyprune.CSConfig.paper()",
            DeprecationWarning,
            stacklevel=2,
        )
        return CSConfig.paper().to_dict()
    if name in _MOVED:
        module, _, attr = _MOVED[name].rpartition(".")
        warnings.warn(f"polyprune.{name} moved to {_MOVED[name]}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'polyprune' has no attribute {name!r}")
