"""Private (engine): the Continuous Sparsification training loop behind fit_subnetwork."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._model import eval_mode, gradients_on, model_dtype_device
from .._progress import stage
from .._unit_io import unit_activation, unit_activations
from ..masks import Masks
from ..targets import Unit
from .config import CSConfig
from .loss import loss_class, loss_context
from .sparsifier import ContinuousSparsifier, ExponentialTemperature

__all__ = ["CSResult", "fit_cs"]


#: Learning rate of the BCE logit's learned shift (in logit units, gradient of order 1).
SHIFT_LR = 0.1


class CSResult(NamedTuple):
    masks: Masks
    history: dict[str, list[float]]
    calibration: tuple[float, float] | None
    paper_kept_fraction: float
    state: dict[str, Any]


def _param_groups(
    cs: ContinuousSparsifier, shift: Tensor | None, lr: float, lr_scale: str
) -> list[dict[str, Any]]:
    """One SGD group per masked weight; with ``lr_scale="elements"`` its lr is ``lr × elements``.

    A layer's mask elements share its contribution to the unit (scaling all of a layer's masks
    by ``c`` scales a bias-free ReLU network's output by ``c``), so the gradient each receives
    is about ``1 / (elements in the layer)``: multiplying the layer's step by its element count
    makes every logit move at a speed that does not depend on the layer's size. The BCE shift
    (last group) uses ``SHIFT_LR``: its gradient is O(1) whatever the network.
    """
    groups: list[dict[str, Any]] = []
    for name, logits in cs.named_parameters():
        factor = cs.num_elements(name) if lr_scale == "elements" else 1
        groups.append({"params": [logits], "lr": lr * factor})
    groups.append({"params": [] if shift is None else [shift], "lr": SHIFT_LR})
    return groups


def _warn_if_silent(model: nn.Module, unit: Unit, images: Tensor, members: Tensor,
                    dense: Tensor, init: float) -> None:  # fmt: skip
    """Warn when the unit is exactly 0 on every member under the starting soft masks while it is
    not under the original model: no gradient of the objective then reaches a mask logit and
    only the sparsity penalty moves them (thresholded units: a bias the masks do not scale)."""
    idx = members.nonzero().flatten()
    if len(idx) == 0 or not bool((dense[idx] != 0).any()):
        return
    start = unit_activations(model, unit, images[idx], None, 64)
    if bool((start == 0).all()):
        warnings.warn(
            f"under CS's starting masks (every weight × init={init:g}, biases unmasked) the unit "
            f"{unit.layer}[{unit.channel}] is exactly 0 on all {len(idx)} member images: no "
            "gradient reaches the masks and the fit will keep (almost) nothing. The unit is "
            "probably gated by a threshold; use method 'ablation', or a larger CSConfig(init=...) "
            "(the default start, init=0.95 faded out over training, keeps most gates open)",
            UserWarning,
            stacklevel=2,
        )


def _offset(config: CSConfig) -> tuple[float, float]:
    """The starting offset ``logit(init)`` of the masks ``σ(t·m + b)`` and the number of epochs
    over which it falls linearly to 0 (``(0, 1)`` when the fit does not fade: ``fade == 0``)."""
    if config.fade_fraction == 0:
        return 0.0, 1.0
    return math.log(config.init / (1.0 - config.init)), config.fade_fraction * config.epochs


def _check_finite(dense: Tensor, unit: Unit) -> None:
    """Refuse a unit that is NaN or infinite under the original model: nothing can be fitted."""
    bad = ~torch.isfinite(dense)
    if bool(bad.any()):
        raise ValueError(
            f"the unit {unit.layer}[{unit.channel}] is NaN or infinite on {int(bad.sum())} of "
            f"{dense.numel()} images under the original model (the images are finite): the "
            "model's weights or buffers hold NaN/inf, or overflow in its dtype; CS cannot fit it"
        )


@gradients_on()  # also inside a caller's no_grad / inference_mode
def fit_cs(
    model: nn.Module,
    unit: Unit,
    images: Tensor,
    members: Tensor,
    granularity: str,
    config: CSConfig,
    seed: int,
    progress: bool,
) -> CSResult:
    """Fit one subnetwork of the placed ``unit`` (see :class:`CSConfig` for the loop)."""
    dtype, device = model_dtype_device(model)
    objective = loss_class(config.loss)()
    calibrate = config.calibrate and objective.uses_shift  # the shift belongs to the BCE logit
    lr, lam = config.learning_rate, config.penalty_weight
    targets = members.to(device)  # moved once, not once per batch
    history: dict[str, list[float]] = {
        k: []
        for k in ("loss", "objective", "penalty", "temperature", "kept_fraction", "lr", "seconds")
    }
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    with eval_mode(model):
        dense = unit_activations(model, unit, images, None, max(config.batch_size, 64))
        _check_finite(dense, unit)
        ctx = loss_context(dense, members, config.calibrate, config.balance, device, dtype)
        dense = dense.to(device, dtype)  # the objectives' targets, moved once
        t0, t1 = config.temperature
        with (
            ContinuousSparsifier(
                model,
                up_to=unit,
                granularity=granularity,
                init=0.5 if config.fade_fraction else config.init,
                temperature=t0,
            ) as cs,  # fmt: skip
            stage(f"CS {unit}", config.epochs, unit="epoch", show=progress) as bar,
        ):
            offset, fade = _offset(config)
            cs.offset = offset  # the masks start at init (also with fade: m = 0, b = logit(init))
            _warn_if_silent(model, unit, images, members, dense, config.init)
            shift = torch.zeros((), device=device, dtype=dtype, requires_grad=True)
            opt = torch.optim.SGD(
                _param_groups(cs, shift if calibrate else None, lr, config.lr_scale),
                lr=lr,
                momentum=config.momentum,
            )
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, config.milestones, config.gamma)
            temp = ExponentialTemperature(cs, start=t0, end=t1, steps=config.epochs)
            for epoch in range(config.epochs):
                cs.offset = offset * max(0.0, 1.0 - epoch / fade) if offset else 0.0
                started = time.perf_counter()
                sums = torch.zeros(3, device=device, dtype=torch.float64)
                for idx in torch.split(torch.randperm(n, generator=gen), config.batch_size):
                    x = images[idx].to(device, dtype)
                    a = unit_activation(model, x, unit)
                    obj = objective(a, dense[idx], targets[idx], shift, ctx)
                    pen = cs.penalty(normalized=config.penalty == "mean")
                    total = obj + lam * pen
                    opt.zero_grad(set_to_none=True)
                    total.backward()  # type: ignore[no-untyped-call]
                    opt.step()
                    # batch-size-weighted means, synchronised once per epoch (not per batch)
                    sums += len(idx) / n * torch.stack([total, obj, pen]).detach().double()
                totals = sums.tolist()
                if not all(map(math.isfinite, totals)):  # the model is restored on the way out
                    raise ValueError(
                        f"the CS loss became {totals[0]} in epoch {len(history['loss']) + 1} "
                        f"(objective {totals[1]}, penalty {totals[2]}): the fit diverged. Lower "
                        f"the learning rate (lr={lr:g}) or the penalty weight (lam={lam:g})"
                    )
                seconds = time.perf_counter() - started
                kept = cs.kept_fraction()
                for key, value in zip(
                    history,
                    (
                        *totals,
                        cs.temperature,
                        kept,
                        opt.param_groups[-1]["lr"] * lr / SHIFT_LR,
                        seconds,
                    ),
                    strict=True,
                ):
                    history[key].append(float(value))
                bar.note(loss=f"{totals[0]:.4f}", kept=f"{kept:.4f}")
                bar.update()
                sched.step()
                temp.step()
            masks, paper, state = cs.hard_masks(), cs.paper_kept_fraction(), cs.state_dict()
    calib = None
    if calibrate:  # the learned shift moves the center: logit = (a − center) / scale
        calib = (ctx.center + ctx.scale * shift.detach().item(), ctx.scale)
    return CSResult(masks, history, calib, paper, state)
