"""Binary masks over a model's maskable weights: a subnetwork.

A :class:`Masks` maps weight names (``"features.0.weight"``) to boolean tensors shaped by the
granularity (``weight``: like the weight; ``kernel``: ``(out, in)``; ``filter``: ``(out,)``).
Applying it multiplies each weight by its (broadcast) mask through
:mod:`torch.nn.utils.parametrize`; removing it restores the model bit for bit.

**Kept fraction** (the paper's "sparsity"): kept weights / weights that can reach the target
unit. Each mask element counts for the weights it stands for (a 5×5 kernel counts 25). Only
elements in the mask's *region* count: for a unit, every reachable layer before the unit's layer
and, in that layer, only the unit channel's fan-in. Elements outside the region are kept (so the
rest of the model is untouched) and ignored by every count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Literal

from torch import Tensor, nn
from torch.nn.utils import prune

from . import _glance
from . import _masking as mk
from . import _validate as valid
from ._files import load_saved, save_torch
from ._graph import paths as _paths
from ._graph.trace import check_layer
from .targets import Unit

__all__ = ["Masks", "Scores"]

_FORMAT = "polyprune.masks/1"


class Scores(dict[str, Tensor]):
    """Scores keyed by weight name (a plain ``dict``) that also carry what :class:`Masks` needs.

    Attributes
    ----------
    granularity : str
        ``"weight"``, ``"kernel"`` or ``"filter"``.
    weight_shapes : dict[str, tuple[int, ...]]
        Full shape of each weight (so kept fractions count weights, not mask elements).
    regions : dict[str, Tensor]
        Boolean, mask-shaped: which elements can reach the unit. Missing: all of them.
    unit : Unit or None
        The unit the scores were computed for.
    """

    def __init__(
        self,
        scores: Mapping[str, Tensor],
        granularity: str,
        *,
        weight_shapes: Mapping[str, tuple[int, ...]] | None = None,
        regions: Mapping[str, Tensor] | None = None,
        unit: Unit | None = None,
    ) -> None:
        super().__init__(valid.tensor_dict("scores", scores))
        self.granularity: mk.Granularity = mk.check_granularity(granularity)
        self.weight_shapes = {k: tuple(v) for k, v in (weight_shapes or {}).items()}
        self.regions = dict(regions or {})
        self.unit = unit


class Masks(Mapping[str, Tensor]):
    """A subnetwork: one boolean mask per maskable weight.

    Parameters
    ----------
    masks : mapping of str to Tensor
        Boolean (or 0/1) masks keyed by weight name, shaped by ``granularity``.
    granularity : {"weight", "kernel", "filter"}
    weight_shapes : mapping, optional
        Full weight shapes; without them each mask element counts as one weight.
    regions : mapping, optional
        Boolean mask-shaped tensors: the elements that count (see module docstring).
    unit : Unit, optional
        The unit this subnetwork is for (kept in :meth:`save`).

    Examples
    --------
    >>> import torch, polyprune as pp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 3))
    >>> masks = pp.Masks({"0.weight": torch.tensor([[True], [False]])}, "kernel")
    >>> with masks.applied(model):
    ...     bool((model[0].weight[1] == 0).all())
    True
    >>> masks.kept_fraction()
    0.5
    """

    def __init__(
        self,
        masks: Mapping[str, Tensor],
        granularity: str = "kernel",
        *,
        weight_shapes: Mapping[str, tuple[int, ...]] | None = None,
        regions: Mapping[str, Tensor] | None = None,
        unit: Unit | None = None,
    ) -> None:
        self.granularity: mk.Granularity = mk.check_granularity(granularity)
        valid.tensor_dict("masks", masks)
        self._masks = {name: mk.as_bool(m, name) for name, m in masks.items()}
        self.weight_shapes = {k: tuple(int(s) for s in v) for k, v in (weight_shapes or {}).items()}
        self.regions = {k: mk.as_bool(v, k) for k, v in (regions or {}).items()}
        self.unit = unit
        self._active: dict[int, AbstractContextManager[nn.Module]] = {}
        mk.check_mask_shapes(self._masks, self.granularity, self.weight_shapes, self.regions)

    # -- Mapping -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return (
            f"Masks({len(self)} weights, granularity={self.granularity!r}, "
            f"kept_fraction={self.kept_fraction():.4f}, unit={self.unit})"
        )

    def _repr_html_(self) -> str:
        return _glance.masks_card(self)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_scores(
        cls,
        scores: Mapping[str, Tensor],
        keep: float,
        scope: Literal["global", "layer"] = "global",
        *,
        normalize: Literal["none", "layer"] = "none",
        granularity: str | None = None,
    ) -> Masks:
        """Keep the highest-scoring elements until a fraction ``keep`` of the weights is kept.

        ``keep`` is the kept fraction (density) in (0, 1]. The target is
        ``round(keep × weights in the region)``; elements are taken best first until at least
        that many weights are kept (exact for ``weight`` granularity; for ``kernel``/``filter``
        at most one element's worth above). Ties go to the earlier weight (in ``scores`` order),
        then the lower flat index, so the result is deterministic.

        ``scope="global"`` ranks all elements together; ``"layer"`` keeps ``keep`` of each layer.
        ``normalize="none"`` ranks raw scores. This equals Hamblin et al.'s circuit_explorer,
        whose ``mask_from_scores`` divides every score by the sum of all absolute scores (a
        common factor that leaves the ranking unchanged). ``normalize="layer"`` divides each
        layer's scores by that layer's sum of absolute scores first, so no layer dominates by
        scale alone.

        ``scores`` is ideally a :class:`Scores` (from a scorer), which carries the granularity,
        weight shapes and regions; a plain dict needs ``granularity`` and counts mask elements.
        """
        valid.tensor_dict("scores", scores)
        gran = mk.check_granularity(granularity or getattr(scores, "granularity", None) or "kernel")
        mk.check_keep(keep)
        mk.check_cut_options(scope, normalize)
        shapes: dict[str, tuple[int, ...]] = dict(getattr(scores, "weight_shapes", {}))
        regions: dict[str, Tensor] = dict(getattr(scores, "regions", {}))
        masks = mk.cut_scores(scores, keep, scope, normalize, gran, shapes, regions)
        return cls(
            masks, gran, weight_shapes=shapes or None, regions=regions or None,
            unit=getattr(scores, "unit", None),
        )  # fmt: skip

    # -- counts ------------------------------------------------------------------------------
    def _counts(self, name: str, mask: Tensor) -> tuple[int, int]:
        region = self.regions.get(name)
        size = (
            mk.element_sizes(self.weight_shapes[name], self.granularity)
            if name in self.weight_shapes
            else 1
        )
        kept = int((mask & region).sum()) if region is not None else int(mask.sum())
        total = int(region.sum()) if region is not None else mask.numel()
        return kept * size, total * size

    def kept_weights(self) -> int:
        """Number of kept weights in the region."""
        return sum(self._counts(n, m)[0] for n, m in self._masks.items())

    def total_weights(self) -> int:
        """Number of weights in the region (the kept fraction's denominator)."""
        return sum(self._counts(n, m)[1] for n, m in self._masks.items())

    def kept_fraction(self) -> float:
        """Kept weights / weights in the region (module docstring)."""
        total = self.total_weights()
        return self.kept_weights() / total if total else 0.0

    def layer_kept_fractions(self) -> dict[str, float]:
        """The kept fraction of each masked weight on its own."""
        out = {}
        for name, mask in self._masks.items():
            kept, total = self._counts(name, mask)
            out[name] = kept / total if total else 0.0
        return out

    # -- applying ----------------------------------------------------------------------------
    def _check_fits(self, model: nn.Module) -> dict[str, Tensor]:
        mk.check_untied(model, self._masks)  # a mask on one use of a tied weight: refused
        expanded = {}
        for name, mask in self._masks.items():
            module, attr = mk.owner(model, name)
            weight: Tensor = getattr(module, attr)
            want = mk.mask_shape(tuple(weight.shape), self.granularity)
            if tuple(mask.shape) != want:
                raise ValueError(
                    f"mask {name!r} has shape {tuple(mask.shape)} but the model's weight "
                    f"{tuple(weight.shape)} needs a {self.granularity} mask of shape {want}"
                )
            m = mask.to(device=weight.device, dtype=weight.dtype)
            expanded[name] = mk.expand(m, tuple(weight.shape))
        return expanded

    def applied(self, model: nn.Module) -> AbstractContextManager[nn.Module]:
        """Context manager: the model with these masks applied; restored exactly on exit.

        Restored means: the same ``Parameter`` objects, the same ``state_dict`` keys (in the
        same order) and values, no parametrizations or hooks left, also when the body raises.
        """
        valid.model("model", model)
        expanded = self._check_fits(model)
        return mk.Applied(model, {name: mk.WeightMask(m) for name, m in expanded.items()})

    def apply(self, model: nn.Module) -> nn.Module:
        """Apply the masks until :meth:`remove` (prefer :meth:`applied`, which cannot leak)."""
        valid.model("model", model)
        if id(model) in self._active:
            raise ValueError("these masks are already applied to this model")
        ctx = self.applied(model)
        ctx.__enter__()
        self._active[id(model)] = ctx
        return model

    def remove(self, model: nn.Module) -> nn.Module:
        """Undo :meth:`apply`, restoring the model exactly.

        If the removal is interrupted (an error or Ctrl-C inside torch's
        ``remove_parametrizations``), the masks stay applied and ``remove`` can be called again.
        """
        valid.model("model", model)
        ctx = self._active.get(id(model))
        if ctx is None:
            raise ValueError("these masks are not applied to this model (see Masks.apply)")
        ctx.__exit__(None, None, None)  # raises before the pop when interrupted: retryable
        del self._active[id(model)]
        return model

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Export to :mod:`torch.nn.utils.prune` (``custom_from_mask``), in place.

        Each masked module gets ``weight_orig``, a ``weight_mask`` buffer and a forward
        pre-hook, as other pruning tools expect; undo with ``prune.remove(module, "weight")``
        (which keeps the zeros). Everything is checked before the first module is changed.

        Examples
        --------
        >>> import torch, polyprune as pp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 3))
        >>> masks = pp.Masks({"0.weight": torch.tensor([[True], [False]])}, "kernel")
        >>> model = masks.to_torch_prune(model)
        >>> torch.nn.utils.prune.is_pruned(model), bool((model[0].weight[1] == 0).all())
        (True, True)
        """
        valid.model("model", model)
        expanded = self._check_fits(model)  # also refuses weights already masked or pruned
        owners = {name: mk.owner(model, name) for name in expanded}
        for name, (module, attr) in owners.items():
            prune.custom_from_mask(module, attr, mask=expanded[name].contiguous())  # type: ignore[no-untyped-call]
        return model

    def effective(self, model: nn.Module, unit: Unit | None = None) -> Masks:
        """Hamblin et al.'s effective mask: drop kept elements on no input→unit path.

        A kept kernel stays only if its input channel is reached from the input through kept
        kernels and its output channel reaches ``unit`` (default: :attr:`unit`) through kept
        kernels; followed per channel over the traced graph (Conv/Linear, channel-wise
        activations/normalization/pooling, residual additions, channel concatenation; other
        operations raise ``GraphError``). At ``weight`` granularity a kernel is kept if any
        of its weights is, and its weights stay as they were; at ``filter`` granularity a
        filter stays if it has a live input and a useful output. Elements outside the
        region are left as they are.

        Examples
        --------
        >>> import torch, polyprune as pp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
        ...                             torch.nn.Conv2d(2, 1, 3))
        >>> masks = pp.Masks({"0.weight": torch.tensor([[True], [False]]),
        ...                   "2.weight": torch.tensor([[False, True]])}, "kernel")
        >>> eff = masks.effective(model, pp.Unit("2", 0))  # channel 1 has no input, 0 no output
        >>> eff["0.weight"].tolist(), eff["2.weight"].tolist()
        ([[False], [False]], [[False, False]])
        """
        valid.model("model", model)
        if unit is not None:
            valid.instance("unit", unit, Unit, "a polyprune.Unit or None")
        unit = unit if unit is not None else self.unit
        if unit is None:
            raise ValueError("effective() needs the unit: these masks carry none, pass unit=")
        check_layer(model, unit.layer, "unit")  # an unknown layer: the closest names
        self._check_fits(model)
        shapes = {n: tuple(getattr(*mk.owner(model, n)).shape) for n in self._masks}
        paths = _paths.KernelPaths(model, unit.layer, unit.channel)
        out = paths.masks(self._masks, self.granularity, shapes, self.regions)
        return Masks(
            out, self.granularity, weight_shapes=self.weight_shapes or None,
            regions=self.regions or None, unit=unit,
        )  # fmt: skip

    # -- comparing ---------------------------------------------------------------------------
    def iou(self, other: Masks) -> float:
        """Intersection over union of the kept weights in the shared region.

        NaN when neither mask keeps anything there (the ratio is undefined, not perfect).
        """
        valid.instance("other", other, Masks, "a polyprune.Masks")
        if other.granularity != self.granularity or set(other) != set(self):
            raise ValueError(
                "iou needs masks over the same weights at the same granularity; got "
                f"{self.granularity}/{sorted(self)} vs {other.granularity}/{sorted(other)}"
            )
        inter = union = 0
        for name, mask in self._masks.items():  # _counts restricts to the region
            inter += self._counts(name, mask & other[name])[0]
            union += self._counts(name, mask | other[name])[0]
        return inter / union if union else float("nan")

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write to ``path`` (``torch.save`` of plain containers: loads with weights_only).

        The write is atomic (a temporary file beside ``path``, renamed over it): a save that
        fails or is killed leaves an earlier file whole. An existing file is replaced only with
        ``overwrite=True`` and only when it is a polyprune masks file; anything else there is a
        ``ValueError`` (a ``FileExistsError`` too) before anything is written.
        """
        valid.path("path", path)
        save_torch(self.to_dict(), path, "masks file", _FORMAT, overwrite=overwrite)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers of tensors, strings and numbers (``torch.load(weights_only=True)``
        reads them back); :meth:`from_dict` rebuilds the masks."""
        unit = None if self.unit is None else [self.unit.layer, self.unit.channel]
        position = None if self.unit is None or self.unit.position is None else self.unit.position
        return {
            "format": _FORMAT,
            "granularity": self.granularity,
            "masks": dict(self._masks),
            "weight_shapes": {k: list(v) for k, v in self.weight_shapes.items()},
            "regions": dict(self.regions),
            "unit": unit,
            "position": None if position is None else list(position),
        }

    @classmethod
    @valid.decoder
    def from_dict(cls, data: Mapping[str, Any]) -> Masks:
        """The masks of :meth:`to_dict`."""
        unit = None
        if data["unit"] is not None:
            pos = data["position"]
            unit = Unit(str(data["unit"][0]), int(data["unit"][1]), tuple(pos) if pos else None)
        return cls(
            data["masks"], data["granularity"], weight_shapes=data["weight_shapes"],
            regions=data["regions"], unit=unit,
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: nn.Module | None = None) -> Masks:
        """Read masks written by :meth:`save`; with ``model``, check they fit it.

        Raises ``ValueError`` naming the file for anything that is not a whole polyprune masks
        file (empty, truncated, another format), ``FileNotFoundError`` for a missing one.
        """
        valid.path("path", path)
        if model is not None:
            valid.model("model", model)
        where = os.fspath(path)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"no masks file at {where!r}")
        data = load_saved(path, f"masks file ({_FORMAT})", _FORMAT)
        try:
            masks = cls.from_dict(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{where!r} is a damaged polyprune masks file: {exc}") from exc
        if model is not None:
            masks._check_fits(model)
        return masks
