"""The result types of polyprune's functions, in one namespace (``polyprune.results``).

=================================  ==============================================
:class:`TopActivations`            :func:`~polyprune.top_activating`
:class:`Crop`                      :meth:`ReceptiveField.crop <polyprune.ReceptiveField.crop>`
:class:`Clustering`                :func:`~polyprune.cluster`
:class:`Scores`                    a scorer's :meth:`~polyprune.scoring.BaseScorer.score`
:class:`Subnetwork`                :func:`~polyprune.fit_subnetwork`
:class:`Evaluation`                :func:`~polyprune.evaluate` (with :class:`ClusterEvaluation`,
                                   :class:`Separation`, :class:`Overlap`)
:class:`StudyResult`               :func:`~polyprune.study`
:class:`Scan`                      :func:`~polyprune.scan`
=================================  ==============================================
"""

from __future__ import annotations

from .clustering import Clustering
from .evaluation import ClusterEvaluation, Evaluation, Overlap, Separation
from .masks import Scores
from .receptive_field import Crop
from .recording import TopActivations
from .scan import Scan
from .study import StudyResult
from .subnetwork import Subnetwork

__all__ = [
    "ClusterEvaluation",
    "Clustering",
    "Crop",
    "Evaluation",
    "Overlap",
    "Scan",
    "Scores",
    "Separation",
    "StudyResult",
    "Subnetwork",
    "TopActivations",
]
