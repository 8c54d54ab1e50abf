"""Private (kernel): a running top-k of every channel of a layer at once, codes stored once.

:class:`LayerTopK` keeps, for each of ``C`` channels, the ``k`` items on which that channel is
highest (ties: the lower global index first, the rule of ``recording._TopK`` and
:func:`polyprune._dist.merge_topk`), together with each kept item's code vector (the ``C``
channels' values on it). Codes are stored once per distinct item, in the layout of
:class:`polyprune._dist.MergedTopK`, so memory is ``O(C·k)`` for values and indices plus one
code row per distinct kept item (at most ``min(N, C·k)`` rows), never ``O(N·C)``.

Items must arrive in increasing global index order within this process (as a data pass
yields them). Once ``k`` items are kept, a channel's ``k``-th value is a threshold: a later
item enters only if it is *strictly* higher (on a tie the kept item has the lower index), so
most items are dropped without sorting. Candidates are buffered and merged ``k`` at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._dist import MergedTopK, merge_topk

__all__ = ["LayerTopK"]


class LayerTopK:
    """Running top-``k`` of all channels of a layer (see the module docstring).

    >>> import torch
    >>> state = LayerTopK(2)
    >>> state.push(torch.tensor([[1.0, 5.0], [3.0, 0.0], [3.0, 2.0]]), offset=0)
    >>> top = state.result()
    >>> top.indices.tolist(), top.values.tolist()
    ([[1, 2], [0, 2]], [[3.0, 3.0], [5.0, 2.0]])
    >>> top.payload("codes")[1, 0].tolist()  # channel 1's best item is item 0
    [1.0, 5.0]
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._top: MergedTopK | None = None
        self._threshold: Tensor | None = None  # (C,): each channel's k-th value once full
        self._pending: list[tuple[Tensor, Tensor, Tensor]] = []  # (values (C, b), idx, codes)
        self._pending_rows = 0

    def push(self, codes: Tensor, offset: int) -> None:
        """Add a batch: ``codes`` ``(B, C)`` of items ``offset .. offset + B - 1``."""
        codes = codes.detach().float().cpu()
        if not bool(torch.isfinite(codes).all()):
            raise ValueError("the model produced NaN or infinite activations")
        index = torch.arange(offset, offset + codes.shape[0])
        values = codes.T
        if self._threshold is not None:
            passing = values > self._threshold[:, None]  # (C, B)
            wanted = passing.any(dim=0)
            if not bool(wanted.any()):
                return
            codes, index = codes[wanted], index[wanted]
            # entries that cannot enter sort below every kept (finite) value
            values = codes.T.masked_fill(~passing[:, wanted], float("-inf"))
        self._pending.append((values.contiguous(), index, codes))
        self._pending_rows += int(index.numel())
        if self._pending_rows >= max(self.k, 256):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        values = [v for v, _, _ in self._pending]
        items = [i for _, i, _ in self._pending]
        codes = [c for _, _, c in self._pending]
        entries = [torch.cat(items).expand(values[0].shape[0], -1)]  # every channel's candidates
        top = self._top
        if top is not None:  # the kept top-k first
            values, items = [top.values, *values], [top.items, *items]
            codes, entries = [top.payloads["codes"], *codes], [top.indices, *entries]
        self._top = merge_topk(
            torch.cat(values, dim=1),
            torch.cat(entries, dim=1),
            {"codes": torch.cat(codes)},
            self.k,
            items=torch.cat(items),
        )
        self._pending, self._pending_rows = [], 0
        if self._top.indices.shape[1] == self.k:
            self._threshold = self._top.values[:, -1].clone()

    def result(self) -> MergedTopK | None:
        """The top-k so far (``(C, min(k, seen))``, codes under ``"codes"``); None if empty."""
        self._flush()
        return self._top
