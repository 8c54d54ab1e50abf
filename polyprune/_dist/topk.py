"""Private (foundation): merging per-rank top-k's with one process's tie rule (value, index)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import _validate as valid
from .comm import exchange
from .world import is_distributed


@dataclass(frozen=True, eq=False)
class MergedTopK:
    """A top-k of one unit (``values`` of shape ``(k,)``) or of ``C`` units at once (``(C, k)``,
    each row its own top-k over the same items), best first, with per-item payloads.

    Payload layout: each payload is stored **once per distinct item**, not once per entry.
    ``items`` lists the distinct item indices that occur in ``indices``, in order of first
    appearance when ``indices`` is read row-major (for the ``(k,)`` form that is simply
    ``indices``, best first); row ``m`` of every payload belongs to ``items[m]``; and ``rows``
    (same shape as ``indices``) points each entry at its payload row, so
    ``items[rows] == indices`` and :meth:`payload` expands a payload to one row per entry.
    A layer-wide top-k of ``C`` channels whose items overlap stores each code vector once.

    Attributes
    ----------
    values : Tensor
        ``(k,)`` or ``(C, k)``, sorted descending along the last dimension.
    indices : Tensor
        int64, same shape: the global item indices; among equal values the lower index first.
    items : Tensor
        ``(M,)`` int64, the distinct item indices (see above).
    rows : Tensor
        int64, same shape as ``indices``: the payload row of each entry.
    payloads : dict[str, Tensor]
        Each ``(M, ...)``, row ``m`` for ``items[m]``.
    """

    values: Tensor
    indices: Tensor
    items: Tensor
    rows: Tensor
    payloads: dict[str, Tensor]

    def payload(self, name: str) -> Tensor:
        """Payload ``name`` with one row per entry: ``(k, ...)`` or ``(C, k, ...)``."""
        table = self.payloads[name]
        return table[self.rows.to(table.device)]

    def __len__(self) -> int:
        return int(self.indices.shape[-1])


def _first_appearance(indices: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct values of ``indices`` in order of first appearance (row-major), and, for each
    entry, the position of its value in that list."""
    flat = indices.reshape(-1)
    if flat.numel() == 0:
        return flat.clone(), torch.zeros_like(indices)
    uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    positions = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((uniq.numel(),), flat.numel(), dtype=torch.long, device=flat.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    perm = torch.argsort(first)
    slot = torch.empty_like(perm)
    slot[perm] = torch.arange(perm.numel(), device=perm.device)
    return uniq[perm], slot[inverse].reshape(indices.shape)


def _locate(wanted: Tensor, items: Tensor, what: str) -> Tensor:
    """Positions in ``items`` (distinct, any order) of each of ``wanted``; ValueError if one is
    missing."""
    if wanted.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=items.device)
    sorted_items, order = torch.sort(items)
    pos = torch.searchsorted(sorted_items, wanted).clamp_(max=max(items.numel() - 1, 0))
    if items.numel() == 0 or not bool((sorted_items[pos] == wanted).all()):
        missing = wanted if items.numel() == 0 else wanted[sorted_items[pos] != wanted]
        raise ValueError(f"{what}: no payload row for item(s) {missing[:5].tolist()}")
    return order[pos]


def _check_distinct(items: Tensor, what: str) -> None:
    if items.numel() > 1:
        s = torch.sort(items).values
        dup = s[1:] == s[:-1]
        if bool(dup.any()):
            raise ValueError(f"{what} contain duplicates, e.g. {s[1:][dup][:5].tolist()}")


def merge_topk(
    values: Tensor,
    indices: Tensor,
    payloads: Mapping[str, Tensor] | None,
    k: int,
    *,
    items: Tensor | None = None,
) -> MergedTopK:
    """The top ``k`` of a set of candidates, with polyprune's tie rule, and their payloads.

    Candidates are typically the concatenation of every rank's local top-k (in any order):
    since each rank's shard holds the global top-k's items that fall in it, and a local top-k
    keeps them all (same tie rule), merging the local top-k's gives exactly the global top-k.

    Order: value descending, ties by the lower global index: polyprune's one tie rule, which
    the running top-k (``polyprune._topk.TopK``) merges with. NaN values are rejected; ``±inf``
    sort as usual.

    Parameters
    ----------
    values : Tensor
        ``(n,)`` candidates of one unit, or ``(C, n)`` of ``C`` units (every row merged on its
        own; all rows have the same ``n`` candidates).
    indices : Tensor
        Integer tensor of the same shape: global item indices, distinct within a row.
    payloads : mapping of str to Tensor, optional
        Per-item data (code vectors, input crops). Without ``items``, only for the ``(n,)``
        form: row ``j`` of each payload belongs to candidate ``j``. With ``items``: row ``m``
        belongs to item ``items[m]`` (the layout of :class:`MergedTopK`).
    k : int
        How many to keep; fewer (``n``) when there are fewer candidates.
    items : Tensor, optional
        ``(M,)`` distinct item indices, one per payload row; must cover the kept items.

    Returns
    -------
    MergedTopK
        On the device of ``values``; payloads on their own devices.

    Examples
    --------
    Two shards' local top-2, with a tie at 5.0 between items 7 and 2:

    >>> import torch
    >>> top = merge_topk(torch.tensor([5.0, 1.0, 9.0, 5.0]), torch.tensor([7, 8, 3, 2]),
    ...                  {"code": torch.tensor([[70], [80], [30], [20]])}, k=3)
    >>> top.values.tolist(), top.indices.tolist(), top.payload("code").tolist()
    ([9.0, 5.0, 5.0], [3, 2, 7], [[30], [20], [70]])

    Two channels at once; the payload table holds each item once:

    >>> top = merge_topk(torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]),
    ...                  torch.tensor([[4, 5, 6], [4, 5, 6]]),
    ...                  {"code": torch.tensor([[40], [50], [60]])}, k=2,
    ...                  items=torch.tensor([4, 5, 6]))
    >>> top.indices.tolist(), top.items.tolist(), top.rows.tolist()
    ([[4, 5], [6, 5]], [4, 5, 6], [[0, 1], [2, 1]])
    >>> top.payload("code")[1].tolist()
    [[60], [50]]
    """
    top, items, payloads = _merge(values, indices, payloads, k, items)
    if not payloads:
        return top
    assert items is not None
    source = _locate(top.items, items, "merge_topk")
    kept = {name: p[source.to(p.device)] for name, p in payloads.items()}
    return MergedTopK(top.values, top.indices, top.items, top.rows, kept)


def _merge(
    values: Tensor,
    indices: Tensor,
    payloads: Mapping[str, Tensor] | None,
    k: int,
    items: Tensor | None,
) -> tuple[MergedTopK, Tensor | None, dict[str, Tensor]]:
    """:func:`merge_topk` without taking the payload rows: the merged top-k (no payloads), and
    the validated ``items`` (one per payload row) and ``payloads``."""
    valid.integer("k", k, low=0)
    if values.dim() not in (1, 2):
        raise ValueError(f"values must be (n,) or (C, n), got shape {tuple(values.shape)}")
    if indices.shape != values.shape:
        raise ValueError(
            f"indices {tuple(indices.shape)} and values {tuple(values.shape)} differ in shape"
        )
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise ValueError(f"indices must be integers, got {indices.dtype}")
    if values.dtype.is_floating_point and bool(values.isnan().any()):
        raise ValueError("values contain NaN")
    payloads = dict(payloads or {})
    one = values.dim() == 1
    v2 = values[None] if one else values
    i2 = (indices[None] if one else indices).to(device=v2.device, dtype=torch.long)
    if payloads:
        if items is None:
            if not one:
                raise ValueError("payloads of a (C, n) top-k need items=: one index per row")
            items = i2[0]
        items = items.to(device=v2.device, dtype=torch.long)
        if items.dim() != 1:
            raise ValueError(f"items must be 1-D, got shape {tuple(items.shape)}")
        _check_distinct(items, "items")
        for name, p in payloads.items():
            if p.dim() == 0 or p.shape[0] != items.numel():
                raise ValueError(
                    f"payload {name!r} has shape {tuple(p.shape)}, expected "
                    f"({items.numel()}, ...): one row per item"
                )
    # stable sorts: by index ascending, then by value descending, keeps lower index on ties
    order = torch.argsort(i2, dim=1, stable=True)
    by_index = i2.gather(1, order)
    if bool((by_index[:, 1:] == by_index[:, :-1]).any()):
        raise ValueError("an item index occurs twice among one unit's candidates")
    by_value = torch.argsort(v2.gather(1, order), dim=1, descending=True, stable=True)
    order = order.gather(1, by_value)[:, :k]
    top_values, top_indices = v2.gather(1, order), by_index.gather(1, by_value[:, :k])
    new_items, rows = _first_appearance(top_indices)
    if one:
        top_values, top_indices, rows = top_values[0], top_indices[0], rows[0]
    return MergedTopK(top_values, top_indices, new_items, rows, {}), items, payloads


# ---------------------------------------------------------------------------------------------
# errors and the transport


def _cpu_payloads(payloads: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    return {name: p.detach().cpu() for name, p in (payloads or {}).items()}


def gather_topk(
    values: Tensor,
    indices: Tensor,
    payloads: Mapping[str, Tensor] | None,
    k: int,
    *,
    items: Tensor | None = None,
) -> MergedTopK:
    """Collective: merge every rank's local top-k into the global top-k, identical on all ranks.

    Each rank passes its local candidates (usually its shard's top-k, in the forms of
    :func:`merge_topk`, with global indices); every rank gets the :func:`merge_topk` of all
    ranks' candidates, on the CPU. A rank whose shard is empty may pass empty tensors
    (``(0,)`` also stands for ``(C, 0)``) and no payloads. Not distributed, this is
    :func:`merge_topk` (moved to the CPU).

    Two exchanges: (1) each rank reduces its candidates to its top-k and all-gathers their
    values and indices, and every rank merges them; (2) each rank all-gathers only the payload
    rows of its items that survived the merge. Invalid input on any rank (shapes, NaN,
    different ``k`` or payload names across ranks) raises on every rank.

    >>> import torch
    >>> top = gather_topk(torch.tensor([2.0, 4.0]), torch.tensor([0, 1]), None, k=1)
    >>> top.values.tolist(), top.indices.tolist()
    ([4.0], [1])
    """
    if not is_distributed():
        return merge_topk(
            values.detach().cpu(),
            indices.cpu(),
            _cpu_payloads(payloads),
            k,
            items=None if items is None else items.cpu(),
        )

    state: dict[str, Any] = {}

    def phase_one() -> object:
        # validate, and cut the candidates to this rank's top-k; payloads stay where they are
        local, held, table = _merge(
            values.detach().cpu(),
            indices.cpu(),
            _cpu_payloads(payloads),
            k,
            None if items is None else items.cpu(),
        )
        state["items"], state["payloads"] = held, table
        meta = {n: (p.dtype, tuple(p.shape[1:])) for n, p in table.items()}
        return k, values.dim(), local.values, local.indices, meta

    parts = exchange("gather_topk", phase_one)
    # everything below runs on identical data on every rank: errors are raised everywhere alike
    ks = {p[0] for p in parts}
    if len(ks) != 1:
        raise ValueError(f"gather_topk: ranks passed different k: {[p[0] for p in parts]}")
    # ranks without candidates may pass (0,) for (C, 0): shapes are taken from the others
    contributing = [p for p in parts if p[2].numel() > 0]
    shaped = contributing or [p for p in parts if p[1] == 2] or parts
    dims = {p[1] for p in shaped}
    if len(dims) != 1:
        raise ValueError("gather_topk: ranks passed (n,) and (C, n) top-k's")
    two_d = dims.pop() == 2
    units = {int(p[2].shape[0]) for p in shaped} if two_d else {1}
    if len(units) != 1:
        raise ValueError(f"gather_topk: ranks passed different numbers of units: {units}")
    n_units = units.pop()

    def as_rows(v: Tensor) -> Tensor:
        if not two_d:
            return v.reshape(-1)
        return v.reshape(n_units, -1) if v.numel() else v.reshape(n_units, 0)

    # payload names, dtypes and row shapes must agree among the ranks that contribute items
    metas = [p[4] for p in contributing] or [p[4] for p in parts if p[4]]
    names = {tuple(sorted(m)) for m in metas}
    if len(names) > 1:
        raise ValueError(f"gather_topk: ranks passed different payloads: {sorted(names)}")
    for m in metas:
        if m != metas[0]:
            raise ValueError(f"gather_topk: payload dtypes/shapes differ across ranks: {metas}")
    merged = merge_topk(
        torch.cat([as_rows(p[2]) for p in parts], dim=-1),
        torch.cat([as_rows(p[3]) for p in parts], dim=-1),
        None,
        k,
    )
    meta: dict[str, tuple[torch.dtype, tuple[int, ...]]] = metas[0] if metas else {}
    if not meta:
        return merged

    def phase_two() -> object:  # the payload rows of this rank's items that were kept
        held: Tensor | None = state["items"]
        if held is None:
            return torch.empty(0, dtype=torch.long), {}
        mask = torch.isin(held, merged.items)
        return held[mask], {n: p[mask] for n, p in state["payloads"].items()}

    rows = exchange("gather_topk", phase_two)
    have = torch.cat([r[0] for r in rows])
    _check_distinct(have, "gather_topk: item indices sent by different ranks (overlapping shards?)")
    source = _locate(merged.items, have, "gather_topk")
    table = {}
    for name, (dtype, shape) in meta.items():
        pieces = [r[1][name] for r in rows if r[0].numel() and name in r[1]]
        full = torch.cat(pieces) if pieces else torch.empty((0, *shape), dtype=dtype)
        table[name] = full[source]
    return MergedTopK(merged.values, merged.indices, merged.items, merged.rows, table)
