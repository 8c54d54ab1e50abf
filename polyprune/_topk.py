"""Private (foundation): the one running top-k of polyprune, over a subset of a layer's channels.

:class:`TopK` keeps, for each tracked channel (every channel of the layer, or a subset: one
unit is a subset of one), the ``k`` items on which that channel is highest, together with each
kept item's payloads: its code vector (all ``C`` channels of the layer on it) and, optionally,
its input. The order is polyprune's one tie rule, that of :func:`polyprune._dist.merge_topk`:
value descending, on a tie the lower global index first. Payloads are stored once per distinct
item, in the layout of :class:`polyprune._dist.MergedTopK`, so memory is ``O(T·k)`` for values
and indices plus one payload row per distinct kept item (at most ``min(N, T·k)`` rows), never
``O(N·C)``.

Items must arrive in increasing global index order within this process (as a data pass
yields them). Once ``k`` items are kept, a channel's ``k``-th value is a threshold: a later
item enters only if it is *strictly* higher (on a tie the kept item has the lower index), so
most items are dropped without sorting. Over every channel, candidates are buffered and
merged ``max(k, 256)`` at a time (sorting ``C`` rows is the cost); over a subset, or with
inputs (large, and O(k) memory is the promise), every batch is merged at once: small tensors
held across batches between the large transient ones fragment the heap, and the peak memory
of a pass grew with its length.
:meth:`TopK.gather` merges every rank's top-k into the global one under ``torch.distributed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._dist import MergedTopK, gather_topk, is_distributed, merge_topk

__all__ = ["TopK"]


class TopK:
    """Running top-``k`` of a layer's channels (see the module docstring).

    ``channels``: the channels to rank (``None``: every channel). Every kept item's code
    vector (all channels) is kept under ``"codes"``, its input under ``"inputs"`` when
    :meth:`push` is given inputs.

    >>> import torch
    >>> state = TopK(2)
    >>> state.push(torch.tensor([[1.0, 5.0], [3.0, 0.0], [3.0, 2.0]]), offset=0)
    >>> top = state.result()
    >>> top.indices.tolist(), top.values.tolist()
    ([[1, 2], [0, 2]], [[3.0, 3.0], [5.0, 2.0]])
    >>> top.payload("codes")[1, 0].tolist()  # channel 1's best item is item 0
    [1.0, 5.0]
    >>> one = TopK(1, channels=[1])  # one unit: channel 1 only
    >>> one.push(torch.tensor([[1.0, 5.0], [3.0, 0.0]]), offset=0)
    >>> one.result().indices.tolist()
    [[0]]
    """

    def __init__(self, k: int, channels: Sequence[int] | None = None) -> None:
        self.k = k
        self.channels = None if channels is None else torch.tensor(list(channels))
        self._top: MergedTopK | None = None
        self._threshold: Tensor | None = None  # (T,): each channel's k-th value once full
        self._pending: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []  # values (T, b), ...
        self._pending_rows = 0
        self._buffer = max(k, 256) if channels is None else 0  # see the module docstring

    def push(self, codes: Tensor, offset: int, inputs: Tensor | None = None) -> None:
        """Add a batch: ``codes`` ``(B, C)`` of items ``offset .. offset + B - 1`` (and their
        ``inputs``, ``(B, ...)``, to keep with them)."""
        codes = codes.detach().float().cpu().clone()  # a view would hold the whole output
        values = codes.T if self.channels is None else codes[:, self.channels].T
        if not bool(torch.isfinite(values).all()):
            raise ValueError("the model produced NaN or infinite activations")
        index = torch.arange(offset, offset + codes.shape[0])
        rows = {"codes": codes}
        if inputs is not None:
            rows["inputs"] = inputs.detach().cpu()
        if self._threshold is not None:
            passing = values > self._threshold[:, None]  # (T, B)
            wanted = passing.any(dim=0)
            if not bool(wanted.any()):
                return
            index, rows = index[wanted], {name: r[wanted] for name, r in rows.items()}
            # entries that cannot enter sort below every kept (finite) value
            values = values[:, wanted].masked_fill(~passing[:, wanted], float("-inf"))
        self._pending.append((values.contiguous(), index, rows))
        self._pending_rows += int(index.numel())
        if self._pending_rows >= self._buffer or inputs is not None:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        values = [v for v, _, _ in self._pending]
        items = [i for _, i, _ in self._pending]
        tables = [r for _, _, r in self._pending]
        entries = [torch.cat(items).expand(values[0].shape[0], -1)]  # every channel's candidates
        top = self._top
        if top is not None:  # the kept top-k first
            values, items = [top.values, *values], [top.items, *items]
            tables, entries = [top.payloads, *tables], [top.indices, *entries]
        self._top = merge_topk(
            torch.cat(values, dim=1),
            torch.cat(entries, dim=1),
            {name: torch.cat([t[name] for t in tables]) for name in tables[0]},
            self.k,
            items=torch.cat(items),
        )
        self._pending, self._pending_rows = [], 0
        if self._top.indices.shape[1] == self.k:
            self._threshold = self._top.values[:, -1].clone()

    def result(self) -> MergedTopK | None:
        """The top-k so far (``(T, min(k, seen))``, payloads by name); None if empty."""
        self._flush()
        return self._top

    def gather(self) -> MergedTopK | None:
        """Collective: the global top-k of every rank's (a rank that read nothing joins empty),
        the same on every rank. Not distributed: :meth:`result`."""
        top = self.result()
        if not is_distributed():
            return top
        if top is None:
            return gather_topk(torch.empty(0), torch.empty(0, dtype=torch.long), None, self.k)
        return gather_topk(top.values, top.indices, top.payloads, self.k, items=top.items)
