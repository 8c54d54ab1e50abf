"""Iterative ablation (ACDC, Conmy et al. 2023) as a subnetwork method: ``"ablation"``.

Kernels are visited from the unit back to the input; each is removed when removing it changes the
objective by at most ``tau`` and leaves it within ``budget`` of the lowest it has reached (ACDC's
rule alone lets a wide layer's many cheap removals add up without bound). The objective is one of
Continuous Sparsification's (``CSConfig(loss=...)``; default ``"both"``: the unit's activation on
the cluster and its silence on the others), evaluated with hard masks. One layer's candidate
removals are evaluated together, several per pass: by running the graph after the layer on one
copy of the images per candidate or, where that graph is a chain up to the unit, by carrying only
each candidate's change through it. By default a batch that changes the objective by at most
``tau`` as a whole is removed in one evaluation, so the decisions depend on how many candidates a
pass holds (``max_batch // batch_size``); ``sequential=True`` decides one kernel at a time,
ACDC's rule. See :mod:`polyprune._ablation` for how.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from . import _ablation
from . import _validate as valid
from ._ablation.effects import removal_effects as _removal_effects
from ._ablation.marginal import marginal_effects as _marginal_effects
from ._cs.loss import loss_class
from ._data import as_images, check_members
from ._graph.trace import check_layer
from ._model import eval_mode
from ._unit_io import placed
from .masks import Masks
from .methods import FitJob, Method, Subnetwork
from .targets import Unit

__all__ = ["DEFAULT_BUDGET", "DEFAULT_TAU", "Ablation", "marginal_effects", "removal_effects"]

#: The default threshold, chosen on planted seeds 0–4 (``docs/faithfulness.md``).
DEFAULT_TAU = 1e-3
#: The default drift budget: how far above the lowest objective reached a run may end.
DEFAULT_BUDGET = 0.01


class Ablation(Method, name="ablation"):
    """ACDC on kernels: remove a kernel when the objective moves by at most ``tau``, within a
    budget.

    Visits the kernels that can reach the unit layer by layer from the unit back to the input;
    in each layer only the kernels still on a path to the unit are tried (the others can change
    nothing and are dropped). A kernel is removed when ``L(without it) − L(now) ≤ tau``, so a
    removal that helps the objective is always taken. To stop early, a batch of candidates
    (least important first, by a first-order estimate) is first removed as a whole, and kept
    out when that moves ``L`` by at most ``tau`` either way. Otherwise each candidate is removed
    alone, which measures its effect ``d_k``, and those allowed (``d_k ≤ tau``, within the
    budget) are taken in the batch's order: the longest prefix whose summed ``d_k`` fit what
    the budget still allows is removed together if the objective then moved by at most ``tau``
    per kernel and stays within the budget, else the prefix is halved and tried again; after a
    prefix is taken this repeats on the rest, candidates whose own ``d_k`` no longer fits are
    kept, and a candidate that fails alone is kept (the prefixes after it start from one
    candidate, twice as long after each one taken). ``sequential=True`` decides
    one candidate at a time instead, ACDC's rule exactly (each removal judged against the
    objective with every earlier removal done). Each removal is also held to a **budget**: it
    is taken only when ``L(without it)`` stays within ``budget`` of the lowest objective the run
    has reached. ACDC's rule alone lets every kernel that costs at most ``tau`` go, so a layer of
    ``n`` such kernels can move the objective by up to ``n × tau``: on a wide layer the run drifts
    far from the unit, past the point where any kernel upstream can matter (random AlexNet's
    ``features.10`` lost every kernel that way; see the changelog of 0.3). With the budget, the
    subnetwork's objective ends at most ``budget`` above the best subnetwork the run passed
    through, hence above the dense network's by at most ``budget``. ``L`` is a Continuous
    Sparsification objective (``loss``; errors are relative to the members' RMS activation, so
    ``tau`` and ``budget`` do not depend on the unit's scale). Finds its own kept fraction
    (``keep`` is not used).

    The subnetwork's ``state["effects"]`` holds, per weight, a continuous score per kernel for a
    threshold-free comparison (:func:`polyprune.evaluation.circuit_scores`), higher is more
    important. ``scores="visit"``: each kernel's effect ``L(without) − L(now)`` when it was
    visited (0 for kernels on no path). ``scores="final"``: its marginal effect in the subnetwork
    found, ``L(S − k) − L(S)`` for a kept kernel and ``L(S) − L(S + k)`` for a removed one (what
    putting it back alone gains), so every kernel is scored against the same subnetwork rather
    than against whatever was still present when it was visited; it costs one batched evaluation
    per kernel more. ``history`` has one entry per layer visited (unit first): ``objective``
    after it, ``kept`` kernels, cumulative candidate ``evaluations`` and ``seconds``.

    Parameters
    ----------
    tau : float
        The threshold, ≥ 0 (default :data:`DEFAULT_TAU`).
    budget : float
        The most the objective may rise above the lowest value it has reached in the run, ≥ 0
        (default :data:`DEFAULT_BUDGET`); ``float("inf")``: ACDC's rule alone, no budget.
    loss : str
        The objective, a registered CS loss (``"both"``, ``"preserve"``, ``"separate"``, ...).
    ablation : {"zero", "mean"}
        A removed kernel contributes 0, or its mean contribution over the images (per position).
    max_batch : int
        At most this many images (candidates × images) per forward pass; with several
        candidates per pass they are also decided in batches (above).
    sequential : bool
        Decide each candidate alone in turn, in index order (ACDC's sequential rule; exactly
        ACDC's with ``budget=float("inf")``): no batch is removed as a whole, and each kernel's
        effect is its own, not a share of a batch's. Still batched: one forward pass evaluates
        every prefix of a window of a layer's candidates removed together (removals in one
        layer add up in its output) and serves for as long as the prefixes are accepted; a
        rejected candidate ends the pass. The window doubles after a pass with no rejection
        and falls back to one candidate after one. Where the graph after the layer is a chain,
        each prefix is carried as its change alone, as the default rule's candidates are.
    scores : {"visit", "final"}
        What ``state["effects"]`` holds (above); the masks do not depend on it.
    progress : bool
        Show progress bars.

    Examples
    --------
    The hand-built network's unit depends on 15 known kernels; ablation keeps exactly those:

    >>> import torch, polyprune as pp
    >>> net = pp.zoo.handbuilt()
    >>> sub = pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3,
    ...                         pp.ablation.Ablation(tau=1e-3, loss="preserve"))
    >>> found = pp.evaluation.circuit_scores(sub.masks, net.truth, sub.state["effects"])
    >>> found.precision, found.recall, found.roc_auc
    (1.0, 1.0, 1.0)

    Scored in the subnetwork found, a kernel put back gains nothing off the circuit:

    >>> sub = pp.fit_subnetwork(net.model, net.unit, net.images, torch.arange(6) < 3,
    ...                         pp.ablation.Ablation(loss="preserve", scores="final"))
    >>> pp.evaluation.circuit_scores(sub.masks, net.truth, sub.state["effects"]).roc_auc
    1.0
    """

    def __init__(
        self,
        *,
        tau: float = DEFAULT_TAU,
        budget: float = DEFAULT_BUDGET,
        loss: str = "both",
        ablation: Literal["zero", "mean"] = "zero",
        max_batch: int = 2048,
        sequential: bool = False,
        scores: Literal["visit", "final"] = "visit",
        progress: bool = True,
    ) -> None:
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not tau >= 0:
            raise ValueError(f"tau must be a number ≥ 0, got {tau!r}")
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget >= 0:
            raise ValueError(f"budget must be a number ≥ 0 (float('inf'): none), got {budget!r}")
        if ablation not in ("zero", "mean"):
            raise ValueError(f"ablation must be 'zero' or 'mean', got {ablation!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int ≥ 1, got {max_batch!r}")
        if not isinstance(sequential, bool):
            raise ValueError(f"sequential must be True or False, got {sequential!r}")
        if scores not in ("visit", "final"):
            raise ValueError(f"scores must be 'visit' or 'final', got {scores!r}")
        loss_class(loss)  # an unknown objective is a ValueError naming the registered ones
        super().__init__(progress=progress)
        self.tau, self.loss, self.ablation, self.max_batch = float(tau), loss, ablation, max_batch
        self.sequential, self.scores, self.budget = bool(sequential), scores, float(budget)

    def fit(self, job: FitJob) -> Subnetwork:
        """Ablate the kernels of one job (kernel granularity only)."""
        if job.granularity != "kernel":
            raise ValueError(
                f"ablation removes kernels: granularity must be 'kernel', got {job.granularity!r}"
            )
        found = _ablation.ablate(
            job.model, job.unit, job.images, job.members, tau=self.tau,
            objective=loss_class(self.loss)(), ablation=self.ablation,
            batch_size=job.batch_size, max_batch=self.max_batch, sequential=self.sequential,
            budget=self.budget, progress=job.progress and self.progress,
        )  # fmt: skip
        effects = found.effects
        if self.scores == "final":
            effects = _marginal_effects(
                job.model, job.unit, job.images, job.members, found.kernels,
                objective=loss_class(self.loss)(), batch_size=job.batch_size,
                max_batch=self.max_batch,
            )  # fmt: skip
        return Subnetwork(
            job.masks({n: found.kernels[n] for n in job.shapes}), job.unit, self.name,
            found.history, state={"effects": effects, "tau": self.tau, "budget": self.budget},
        )  # fmt: skip

    def __repr__(self) -> str:
        extra = "" if self.budget == DEFAULT_BUDGET else f", budget={self.budget:g}"
        extra += ", sequential=True" if self.sequential else ""
        extra += "" if self.scores == "visit" else f", scores={self.scores!r}"
        return f"Ablation(tau={self.tau:g}, loss={self.loss!r}, ablation={self.ablation!r}{extra})"


def removal_effects(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    masks: Masks,
    *,
    loss: str = "both",
    batch_size: int = 256,
    effects: bool = True,
) -> tuple[float, dict[str, Tensor]]:
    """The objective of a subnetwork, and how much removing each of its kernels alone changes it.

    The identifiability check of a known circuit: a kept kernel whose removal does not worsen
    the objective (effect ≤ 0) cannot be asked for by any method that optimizes it. ``masks``
    at kernel granularity (e.g. a planted circuit); the objective is the CS loss ``loss`` on
    ``images`` with ``members`` the cluster (hard masks, lower is better). Returns the objective
    and, per weight, the effect ``L(without the kernel) − L`` of each kept kernel in the region
    (0 elsewhere; all 0 with ``effects=False``, which computes the objective only). Batched as
    :class:`Ablation`; the model is left as found.

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> net = pp.zoo.handbuilt()
    >>> loss, effects = pp.ablation.removal_effects(
    ...     net.model, net.unit, net.images, torch.arange(6) < 3, net.truth, loss="preserve")
    >>> loss, all(bool((e[net.truth[n] & net.truth.regions[n]] > 0).all())
    ...           for n, e in effects.items())
    (0.0, True)
    """
    objective, at, images, members, kernels = _checked(
        model, unit, images, members, masks, loss, batch_size
    )
    with eval_mode(model), torch.no_grad():
        return _removal_effects(
            model, at, images, members, kernels, objective=objective, batch_size=batch_size,
            effects=effects,
        )  # fmt: skip


def marginal_effects(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    masks: Masks,
    *,
    loss: str = "both",
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Each kernel's marginal effect in a subnetwork: what removing it alone costs, or what
    putting it back alone gains.

    For a subnetwork ``S`` (``masks`` at kernel granularity: a fitted subnetwork's, a planted
    circuit), per weight: ``L(S − k) − L(S)`` for each kept kernel ``k`` and ``L(S) − L(S + k)``
    for each removed one, in the region that can reach the unit (0 elsewhere); higher is more
    important to the objective either way, so a kept kernel with effect ≤ 0 is one the
    objective does not need and a removed kernel with effect > 0 one it would take back. The
    objective is the CS loss ``loss`` on ``images`` with ``members`` the cluster (hard masks,
    lower is better), as :func:`removal_effects`; ``Ablation(scores="final")`` scores its own
    subnetwork this way. One batched evaluation per kernel of the region; the model is left as
    found.

    Examples
    --------
    On the hand-built network, every kernel of the true circuit is needed, and no kernel off it
    would help:

    >>> import torch, polyprune as pp
    >>> net = pp.zoo.handbuilt()
    >>> effects = pp.ablation.marginal_effects(
    ...     net.model, net.unit, net.images, torch.arange(6) < 3, net.truth, loss="preserve")
    >>> all(bool((e[net.truth[n] & net.truth.regions[n]] > 0).all()) for n, e in effects.items())
    True
    >>> all(bool((e[~net.truth[n] & net.truth.regions[n]] <= 0).all())
    ...     for n, e in effects.items())
    True
    """
    objective, at, images, members, kernels = _checked(
        model, unit, images, members, masks, loss, batch_size
    )
    with eval_mode(model), torch.no_grad():
        return _marginal_effects(
            model, at, images, members, kernels, objective=objective, batch_size=batch_size
        )  # fmt: skip


def _checked(
    model: nn.Module, unit: Unit, images: Tensor, members: Tensor, masks: Masks, loss: str,
    batch_size: int,
) -> tuple[Callable[..., Tensor], Unit, Tensor, Tensor, dict[str, Tensor]]:  # fmt: skip
    """The arguments of :func:`removal_effects` and :func:`marginal_effects`, checked before
    any work: the objective, the placed unit, the images, the members and the kept kernels."""
    valid.model("model", model)
    valid.instance("unit", unit, Unit, "a polyprune.Unit")
    valid.integer("batch_size", batch_size, low=1)
    if not isinstance(masks, Masks) or masks.granularity != "kernel":
        raise ValueError("masks must be polyprune.Masks at kernel granularity")
    images = as_images(images)
    objective = loss_class(loss)()
    check_layer(model, unit.layer, "unit")  # an unknown layer: the closest names
    at = placed(model, unit, images)  # images the model cannot run on: one error naming them
    members = check_members(members, images.shape[0])
    return objective, at, images, members, {n: masks[n] for n in masks}
