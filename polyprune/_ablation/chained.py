"""Private (methods): an ablation run's evaluations on the chained path
(:class:`~polyprune._ablation.delta.Chain`): each candidate's removal alone, and the objective
now from the last state computed when few kernels differ from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._model import model_dtype_device
from .graph import contributions

if TYPE_CHECKING:
    from . import _Ablator as Ablator

__all__ = ["prefixes", "removals", "trial"]

#: at most this many kernels changed since the last state computed: propagate their change
#: (more: run the graph after the layer again)
MAX_CHANGED = 256


def removals(run: Ablator, module: nn.Module, rows: Tensor, cols: Tensor) -> Tensor:
    """The unit for each candidate removed alone: ``(K, N)``."""
    assert run._chain is not None
    parts = []
    with torch.no_grad():
        for x, outs in zip(run._cache, run._chained(), strict=True):
            r, c = rows.to(x.device), cols.to(x.device)
            change = -contributions(module, x, r, c).movedim(1, 0)
            if run.mean and run._mean_now is not None:
                change = change + run._mean_now.to(change)[:, None]
            parts.append(run._chain.removals(outs, change[:, :, None], r[:, None]).float().cpu())
    run.evaluations += len(rows)
    return torch.cat(parts, 1)


def prefixes(
    run: Ablator, module: nn.Module, rows: Tensor, cols: Tensor, means: Tensor | None
) -> Tensor:
    """The unit with the first ``k + 1`` candidates removed together, for each ``k``: ``(K, N)``
    (``means``: each candidate's mean contribution ``(K, *map)``, put back where it is removed).
    Copy ``k`` changes the layer's output in the candidates' distinct channels by the sum of the
    first ``k + 1`` changes there, as one candidate of several channels. With zero ablation,
    where at most :data:`MAX_CHANGED` kernels differ from the last state the chain computed,
    each copy starts from that state and also carries their change (as :func:`trial`), so the
    chain is not run again after every accepted removal."""
    assert run._chain is not None and run._name is not None
    k = len(rows)
    since = None if means is not None else _since(run)
    if since is None:
        outputs, signs = run._chained(), -torch.ones(k)
        every, before = (rows, cols), 0
    else:
        (d_rows, d_cols, d_signs), outputs = since
        signs = torch.cat([d_signs, -torch.ones(k)])
        every, before = (torch.cat([d_rows, rows]), torch.cat([d_cols, cols])), len(d_rows)
    channels, where = torch.unique(every[0], return_inverse=True)
    # (copies, kernels, channels): copy q takes the differing kernels and candidates 0..q
    pick = torch.cat([torch.ones(k, before), torch.ones(k, k).tril()], 1)[:, :, None]
    pick = pick * signs[None, :, None] * F.one_hot(where, len(channels))[None]
    dtype, device = model_dtype_device(run.model)
    if since is not None:  # the unmasked weights: a removed kernel's change is −w ∗ x
        run._leaf[run._name] = torch.ones(run.kept[run._name].shape, dtype=dtype, device=device)
    parts = []
    try:
        with torch.no_grad():
            for x, outs in zip(run._cache, outputs, strict=True):
                r, c = every[0].to(x.device), every[1].to(x.device)
                each = contributions(module, x, r, c)  # (N, kernels, *map)
                if means is not None:
                    each = each - means.to(each)[None]
                change = torch.einsum("qju,nj...->qnu...", pick.to(each), each)
                at = channels.to(x.device).expand(k, -1)
                parts.append(run._chain.removals(outs, change, at).float().cpu())
    finally:
        run._leaf.pop(run._name, None)
    run.evaluations += k
    return torch.cat(parts, 1)


def _differing(
    run: Ablator,
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor, list[list[Tensor]]] | None:
    """The kernels of the ablated layer that differ from the last state the chain computed
    (rows, cols, +1 where put back and −1 where removed since), that state's mean corrections
    and its outputs; None where there is no such state, none differ or more than
    :data:`MAX_CHANGED` do."""
    chain, name = run._chain, run._name
    if chain is None or name is None or not chain.cached:
        return None
    (kept_then, corr_then), outs = chain.cached[-1]
    kept = run.kept[name]
    changed = (kept != kept_then).nonzero()
    if not 0 < len(changed) <= MAX_CHANGED:
        return None
    rows, cols = changed[:, 0], changed[:, 1]
    return (rows, cols, kept[rows, cols].float() * 2 - 1), corr_then, outs


def _since(run: Ablator) -> tuple[tuple[Tensor, Tensor, Tensor], list[list[Tensor]]] | None:
    """:func:`_differing` without mean corrections: None also where they are in play, now or in
    the last state computed."""
    if run._name in run.corrections:
        return None
    found = _differing(run)
    if found is None or found[1].numel():
        return None
    return found[0], found[2]


def trial(run: Ablator) -> Tensor | None:
    """The unit now ``(N,)``, from the last state the chain computed plus the change of the
    kernels that differ from it (removed: ``−w ∗ x``; put back: ``+w ∗ x``; and the change of
    the mean corrections), all of them as one candidate of several channels; None where that
    state is missing or more than :data:`MAX_CHANGED` kernels differ."""
    found = _differing(run)
    if found is None:
        return None
    (rows, cols, signs), corr_then, outs = found  # signs +1: put back, −1: removed
    chain, name = run._chain, run._name
    assert chain is not None and name is not None  # _differing found a state
    kept = run.kept[name]
    corr = run.corrections.get(name)
    shift = None
    if corr is not None or corr_then.numel():
        shift = (corr if corr is not None else 0) - (corr_then if corr_then.numel() else 0)
    module = run.model.get_submodule(name.rpartition(".")[0])
    channels, where = torch.unique(rows, return_inverse=True)
    dtype, device = model_dtype_device(run.model)
    run._leaf[name] = torch.ones(kept.shape, dtype=dtype, device=device)  # unmasked weights
    parts = []
    try:
        with torch.no_grad():
            for x, out in zip(run._cache, outs, strict=True):
                c = contributions(module, x, rows.to(x.device), cols.to(x.device))
                c = c * signs.to(c).reshape(1, -1, *(1,) * (c.dim() - 2))
                change = c.new_zeros(c.shape[0], len(channels), *c.shape[2:])
                change.index_add_(1, where.to(c.device), c)
                if shift is not None:
                    change = change + torch.as_tensor(shift)[channels].to(change)
                parts.append(chain.removals(out, change[None], channels[None].to(x.device)))
    finally:
        del run._leaf[name]
    return torch.cat(parts, 1)[0].float().cpu()
