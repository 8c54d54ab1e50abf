"""Private (methods): each kernel's marginal effect in a final subnetwork, kept or not.

``L(S − k) − L(S)`` for a kept kernel ``k`` (what removing it alone costs: the batched removals
of :func:`~polyprune._ablation.removal_effects`) and ``L(S) − L(S + k)`` for a removed one (what
putting it back alone gains), so both read "how much worse the objective is without ``k``, the
rest as found": one continuous score per kernel of the region, higher is more important. The
additions are batched as the removals are: putting kernel ``(o, i)`` back changes only output
channel ``o`` of its layer, by ``+w_oi ∗ x_i`` with the unmasked weight, so a forward hook
stacks ``K`` copies of the layer's output, each with one candidate's contribution added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..targets import Unit
from .graph import contributions, dominates

if TYPE_CHECKING:
    from . import ObjectiveFn
    from . import _Ablator as Ablator

__all__ = ["additions", "changed", "marginal_effects", "one_each", "readd_gains"]


def additions(run: Ablator, name: str, rows: Tensor, cols: Tensor) -> Tensor:
    """The objective with each removed kernel ``(rows[k], cols[k])`` of weight ``name`` put
    back alone: ``(K,)``. Inside ``run.masked()``, with ``run._expand`` set for the layer."""
    weight = _unmasked(run.model.get_submodule(name.rpartition(".")[0]))

    def change(m: nn.Module, x: Tensor) -> Tensor:
        r, c = rows.to(x.device), cols.to(x.device)
        return one_each(contributions(m, x, r, c, weight.to(x)), r, m, x)

    return changed(run, name, len(rows), change)


def one_each(c: Tensor, rows: Tensor, module: nn.Module, x: Tensor) -> Tensor:
    """``(K, N, C_out, *map)``: copy ``k`` holds ``c[:, k]`` (``(N, K, *map)``, a kernel's
    contribution map) in its output channel ``rows[k]``, 0 elsewhere."""
    k = len(rows)
    out = torch.zeros(k, c.shape[0], _outputs(module), *c.shape[2:], dtype=c.dtype,
                      device=c.device)  # fmt: skip
    out[torch.arange(k, device=c.device), :, rows] = c.movedim(1, 0)
    return out


def changed(
    run: Ablator, name: str, k: int, change: Callable[[nn.Module, Tensor], Tensor]
) -> Tensor:
    """The objective with ``k`` changed copies of layer ``name``'s output, ``(k,)``: copy ``j``
    is the output plus ``change(module, x)[j]`` (``x`` the layer's input, ``(N, ...)``). Inside
    ``run.masked()``, with ``run._expand`` set for the layer."""
    module = run.model.get_submodule(name.rpartition(".")[0])

    def hook(m: nn.Module, args: Any, out: Tensor) -> Tensor:
        x = args[0]
        n = x.shape[0] if run._expand else x.shape[0] // k
        if run._expand:
            stacked = out.unsqueeze(0).expand(k, *out.shape).clone()
        else:
            stacked = out.reshape(k, n, *out.shape[1:]).clone()
        return (stacked + change(m, x[:n]).to(out)).flatten(0, 1)

    handle = module.register_forward_hook(hook)
    try:
        acts = run.activations(k)
    finally:
        handle.remove()
    return torch.tensor([run.loss(a) for a in acts])


def _outputs(module: nn.Module) -> int:
    weight = module.weight
    assert isinstance(weight, Tensor)
    return int(weight.shape[0])


def marginal_effects(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    kernels: dict[str, Tensor],
    *,
    objective: ObjectiveFn,
    batch_size: int = 256,
    max_batch: int = 2048,
) -> dict[str, Tensor]:
    """Per weight of the region, each kernel's marginal effect in the subnetwork ``kernels``
    (kept ``(out, in)`` per weight): ``L(S − k) − L(S)`` where kept, ``L(S) − L(S + k)`` where
    removed (module docstring); 0 outside the region. The model is left as found."""
    from .effects import removals, subnetwork_run

    run = subnetwork_run(model, unit, images, members, kernels, objective, batch_size, max_batch)
    per_forward = max(1, max_batch // run.batch_size)
    _, removal = removals(run, per_forward)  # one run: the dense activations are computed once
    _, gains = readd_gains(run, per_forward)
    return {n: torch.where(run.kept[n], removal[n], gains[n]) for n in removal}


def readd_gains(run: Ablator, per_forward: int) -> tuple[float, dict[str, Tensor]]:
    """The objective of ``run``'s kept kernels, and per weight ``L(S) − L(S + k)`` for each
    removed kernel ``k`` of the region (0 elsewhere); ``per_forward`` candidates per pass."""
    gains = {n: torch.zeros(r.shape) for n, r in run.regions.items()}
    with run.masked():
        base = run.current()
        for name, region in run.regions.items():
            module = name.rpartition(".")[0]
            candidates = (~run.kept[name] & region).nonzero()
            if not len(candidates):
                continue
            run._expand = dominates(run.model, run.unit.layer, module)
            run.start(module)
            for chunk in torch.split(candidates, per_forward):
                rows, cols = chunk[:, 0], chunk[:, 1]
                gains[name][rows, cols] = base - additions(run, name, rows, cols)
        run.start(None)
    return base, gains


def _unmasked(module: nn.Module) -> Tensor:
    """The module's weight as the user set it (under ``run.masked()`` it is parametrized)."""
    params = getattr(module, "parametrizations", None)
    weight = params["weight"].original if params is not None and "weight" in params else None
    if weight is None:
        weight = module.weight
    assert isinstance(weight, Tensor)
    return weight.detach()
