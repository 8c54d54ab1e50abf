"""Private (foundation): granularity arithmetic, and weight masking that restores the model
exactly."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import _validate as valid

__all__ = [
    "GRANULARITIES",
    "MASKABLE_TYPES",
    "Applied",
    "Attachment",
    "Granularity",
    "attach",
    "check_mask_shapes",
    "check_plain_weight",
    "check_untied",
    "choose_best",
    "cut_scores",
    "element_sizes",
    "expand",
    "is_maskable",
    "mask_shape",
    "owner",
    "warn_zero_scores",
]

#: Module types whose ``weight`` can be masked. Other layers pass through unmasked.
MASKABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def is_maskable(module: nn.Module) -> bool:
    """Whether ``module`` is a Conv/Linear layer with a weight that polyprune can mask."""
    return isinstance(module, MASKABLE_TYPES) and isinstance(
        getattr(module, "weight", None), nn.Parameter
    )


Granularity = Literal["weight", "kernel", "filter"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)


def check_granularity(granularity: str) -> Granularity:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity  # type: ignore[return-value]


def check_keep(keep: object) -> float:
    """``keep`` as a float, or a ValueError unless it is a number in (0, 1]."""
    return valid.fraction("keep", keep, why=" (the kept fraction)")


def check_cut_options(scope: str, normalize: str) -> None:
    """Validate the ``scope`` and ``normalize`` options of :meth:`Masks.from_scores`."""
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if normalize not in ("none", "layer"):
        raise ValueError(f"normalize must be 'none' or 'layer', got {normalize!r}")


def mask_shape(weight_shape: tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """Shape of a mask over a weight: like it (weight), (out, in) (kernel) or (out,) (filter)."""
    check_granularity(granularity)
    return {"weight": weight_shape, "kernel": weight_shape[:2], "filter": weight_shape[:1]}[
        granularity
    ]


def element_sizes(weight_shape: tuple[int, ...], granularity: str) -> int:
    """How many weights one mask element stands for."""
    n = 1
    for s in weight_shape[len(mask_shape(weight_shape, granularity)) :]:
        n *= s
    return n


def expand(mask: Tensor, weight_shape: tuple[int, ...]) -> Tensor:
    """Broadcast a kernel/filter mask over the trailing dimensions of a weight."""
    return mask.reshape(*mask.shape, *(1,) * (len(weight_shape) - mask.dim())).expand(weight_shape)


def owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module owning parameter ``name`` and the attribute name (``"features.0.weight"``)."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        module = None
    if module is not None and (
        parametrize.is_parametrized(module, attr) or hasattr(module, f"{attr}_orig")
    ):
        raise ValueError(
            f"{name!r} is already masked or pruned (a parametrization, or "
            "torch.nn.utils.prune's weight_orig); remove that first"
        )
    if module is None or attr != "weight" or not is_maskable(module):
        valid = [n for n, m in model.named_modules() if is_maskable(m)]
        raise ValueError(
            f"{name!r} is not the weight of a maskable (Conv/Linear) layer of "
            f"{type(model).__name__}; maskable weights: {[f'{v}.weight' for v in valid][:12]}"
            + (" ..." if len(valid) > 12 else "")
        )
    return module, attr


class WeightMask(nn.Module):
    """``w ↦ w · mask`` as a parametrization; ``mask`` is a fixed tensor or a callable."""

    def __init__(self, mask: Tensor | Callable[[], Tensor]) -> None:
        super().__init__()
        self._mask = mask

    def forward(self, weight: Tensor) -> Tensor:
        mask = self._mask() if callable(self._mask) else self._mask
        return weight * mask


def check_plain_weight(module: nn.Module, name: str) -> None:
    """Refuse a Conv/Linear whose weight is not a ``Parameter`` of its own.

    Old-style ``torch.nn.utils.weight_norm`` (or ``spectral_norm``) recomputes ``weight`` at
    each forward from other parameters, and a parametrization makes it a property: a mask
    could not hold there, and the layer would silently be left out of the masks and the kept
    fraction.
    """
    if not isinstance(module, MASKABLE_TYPES) or is_maskable(module):
        return
    if parametrize.is_parametrized(module, "weight"):
        how = "parametrized (masks applied, or parametrizations.weight_norm?)"
        undo = "remove the masks, or torch.nn.utils.parametrize.remove_parametrizations"
    else:
        how = "recomputed at each forward (old-style weight_norm or spectral_norm?)"
        undo = "torch.nn.utils.remove_weight_norm"
    raise ValueError(
        f"{name!r} ({type(module).__name__}) has a weight that is not a Parameter but {how}: "
        "a mask could not hold on it, so polyprune refuses such layers; fold it into a plain "
        f"weight first ({undo}(module, 'weight'))"
    )


def check_untied(model: nn.Module, names: Iterable[str]) -> None:
    """Refuse weights that are one ``Parameter`` used by several modules (tied weights).

    A mask is registered on one module: the other uses of a tied weight would stay dense, and
    the subnetwork would silently not be the one described.
    """
    uses: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        uses.setdefault(id(p), []).append(name)
    params = dict(model.named_parameters())
    for name in names:
        shared = uses.get(id(params[name]), []) if name in params else []
        if len(shared) > 1:
            raise ValueError(
                f"{name!r} is tied: the same Parameter is also {sorted(set(shared) - {name})}. "
                "A mask on one module would leave the other uses dense, so polyprune refuses "
                "tied weights; untie them first (e.g. model.b.weight = "
                "nn.Parameter(model.a.weight.detach().clone()))"
            )


class Attachment:
    """Parametrizations registered on named weights, taken off exactly and robustly.

    Every name is validated before anything is registered (masked, pruned or tied weights are
    refused). :meth:`close` removes what is registered, puts the original ``Parameter`` objects
    back in their registration order (hence ``state_dict`` key order) and, with ``freeze``,
    restores every parameter's ``requires_grad``. A removal that fails leaves the attachment
    consistent: :attr:`attached` stays true and :meth:`close` can be called again.
    """

    def __init__(
        self, model: nn.Module, parametrizations: Mapping[str, nn.Module], *, freeze: bool = False
    ) -> None:
        owners = {name: owner(model, name) for name in parametrizations}  # refuses masked
        check_untied(model, parametrizations)
        self._orders = {id(m): (m, list(m._parameters)) for m, _ in owners.values()}
        self._flags = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
        self._done: list[tuple[nn.Module, str]] = []
        try:
            for p, _ in self._flags:
                p.requires_grad_(False)
            for name, (module, attr) in owners.items():
                parametrize.register_parametrization(module, attr, parametrizations[name])
                self._done.append((module, attr))
        except BaseException:
            self.close()
            raise

    @property
    def attached(self) -> bool:
        return bool(self._done or self._flags)

    def close(self) -> None:
        """Remove every parametrization and restore the model (a no-op when already done)."""
        while self._done:
            module, attr = self._done[-1]
            if parametrize.is_parametrized(module, attr):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            self._done.pop()
        for module, order in self._orders.values():
            params = module._parameters
            for key in order:
                if key in params:
                    params[key] = params.pop(key)
        for p, flag in self._flags:
            p.requires_grad_(flag)
        self._flags = []


class Applied(AbstractContextManager[nn.Module]):
    """The context of ``Masks.applied``: entered once, restores the model on exit."""

    def __init__(self, model: nn.Module, parametrizations: dict[str, nn.Module]) -> None:
        self._model, self._parametrizations = model, parametrizations
        self._attachment: Attachment | None = None

    def __enter__(self) -> nn.Module:
        if self._attachment is not None:
            raise RuntimeError(
                "this masks.applied(model) context is already active; it cannot be entered "
                "again until it is left"
            )
        self._attachment = Attachment(self._model, self._parametrizations)
        return self._model

    def __exit__(self, *exc_info: object) -> None:
        # forgotten only once closed: an exit that fails (Ctrl-C inside torch's removal) leaves
        # the context active, and exiting it again finishes the restore (Attachment.close)
        if self._attachment is not None:
            self._attachment.close()
            self._attachment = None


@contextlib.contextmanager
def attach(
    model: nn.Module, parametrizations: Mapping[str, nn.Module]
) -> Iterator[dict[str, nn.Module]]:
    """:class:`Attachment` as a context manager: the model is restored on exit, also on error."""
    attachment = Attachment(model, parametrizations)
    try:
        yield dict(parametrizations)
    finally:
        attachment.close()


def as_bool(mask: Tensor, name: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask {name!r} must be a tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask.detach().cpu()
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise ValueError(f"mask {name!r} contains NaN or infinite values")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"mask {name!r} must be boolean (or 0/1), got other values")
    return mask.detach().cpu().bool()


def check_mask_shapes(
    masks: Mapping[str, Tensor], granularity: str,
    weight_shapes: Mapping[str, tuple[int, ...]], regions: Mapping[str, Tensor],
) -> None:  # fmt: skip
    """Raise ``ValueError`` for a mask whose shape does not fit its granularity, its weight's
    shape (where known) or its region's (the checks of :class:`~polyprune.masks.Masks`)."""
    for name, m in masks.items():
        want = {"kernel": 2, "filter": 1}.get(granularity)
        if want is not None and m.dim() != want:
            raise ValueError(
                f"mask {name!r} has shape {tuple(m.shape)}: {granularity} masks are "
                f"{want}-D ({'(out, in)' if want == 2 else '(out,)'})"
            )
        shape = weight_shapes.get(name)
        if shape is not None and tuple(m.shape) != mask_shape(shape, granularity):
            raise ValueError(
                f"mask {name!r} has shape {tuple(m.shape)}, expected "
                f"{mask_shape(shape, granularity)} for weight {shape}"
            )
        region = regions.get(name)
        if region is not None and region.shape != m.shape:
            raise ValueError(f"region of {name!r} has shape {tuple(region.shape)} != mask's")


def cut_scores(
    scores: Mapping[str, Tensor],
    keep: float,
    scope: str,
    normalize: str,
    granularity: str,
    shapes: Mapping[str, tuple[int, ...]],
    regions: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """The boolean masks of ``Masks.from_scores`` (its docstring has the rule): best elements
    first until ``keep`` of the weights in each group (all layers, or each layer) is kept;
    elements outside a layer's region are kept as they are."""
    flat: list[Tensor] = []
    sizes: list[Tensor] = []
    inside: list[Tensor] = []
    for name, s in scores.items():
        s = s.detach().float().cpu()
        if not torch.isfinite(s).all():
            raise ValueError(f"scores for {name!r} contain NaN or infinite values")
        region = regions.get(name, torch.ones(s.shape, dtype=torch.bool)).reshape(-1)
        if normalize == "layer":
            total = s.reshape(-1)[region].abs().sum()
            s = s / total if total > 0 else s
        size = element_sizes(shapes[name], granularity) if name in shapes else 1
        flat.append(s.reshape(-1))
        sizes.append(torch.full((s.numel(),), size, dtype=torch.long))
        inside.append(region)
    groups = [list(range(len(flat)))] if scope == "global" else [[i] for i in range(len(flat))]
    chosen = [torch.zeros(f.numel(), dtype=torch.bool) for f in flat]
    names = list(scores)
    for group in groups:
        choose_best(flat, sizes, inside, chosen, group, keep, [names[i] for i in group])
    return {
        name: (chosen[i] | ~inside[i]).reshape(scores[name].shape) for i, name in enumerate(names)
    }


def choose_best(
    flat: list[Tensor],
    sizes: list[Tensor],
    inside: list[Tensor],
    chosen: list[Tensor],
    group: list[int],
    keep: float,
    names: list[str],
) -> None:
    """Mark the best elements of ``group`` (in-region only) until the weight target is met."""
    scores = torch.cat([flat[i][inside[i]] for i in group])
    weights = torch.cat([sizes[i][inside[i]] for i in group])
    total = int(weights.sum())
    target = math.floor(keep * total + 0.5)
    if target == 0:
        raise ValueError(
            f"keep={keep} keeps 0 of the {total} weights in {names if len(names) > 1 else names[0]}"
            f"; the smallest usable keep is about {1 / total:.3g}"
        )
    picked = _top(scores, weights, target)
    warn_zero_scores(scores, picked, stacklevel=5)  # the caller of Masks.from_scores
    offset = 0
    for i in group:
        count = int(inside[i].sum())
        chosen[i][inside[i].nonzero().squeeze(1)] = picked[offset : offset + count]
        offset += count


def warn_zero_scores(scores: Tensor, picked: Tensor, stacklevel: int) -> None:
    """Warn when some of the ``picked`` elements score 0 and others could have been picked
    (the choice among them is by order, not by score)."""
    zeros = int((scores[picked] == 0).sum())
    if zeros and bool((scores != 0).any()) and not bool(picked.all()):  # all kept: no choice
        warnings.warn(
            f"{zeros} kept elements have score 0 (the objective's "
            "gradient is sparse): which of those are kept is decided by order, not by score",
            UserWarning,
            stacklevel=stacklevel,
        )


def _top(scores: Tensor, weights: Tensor, target: int) -> Tensor:
    """The best elements, in order of (score descending, index ascending), until their weights
    add up to at least ``target``. With equal weights a selection (``kthvalue``) replaces the
    sort: the same elements, an order of magnitude faster on millions of them."""
    picked = torch.zeros(scores.numel(), dtype=torch.bool)
    if bool((weights == weights[0]).all()):
        n = -(-target // int(weights[0]))
        if n >= scores.numel():
            return picked.fill_(True)
        cut = torch.kthvalue(scores, scores.numel() - n + 1).values  # the n-th largest
        picked = scores > cut
        ties = (scores == cut).nonzero().squeeze(1)
        picked[ties[: n - int(picked.sum())]] = True
        return picked
    order = torch.argsort(-scores, stable=True)
    n = int(torch.searchsorted(torch.cumsum(weights[order], 0), target)) + 1
    picked[order[:n]] = True
    return picked
