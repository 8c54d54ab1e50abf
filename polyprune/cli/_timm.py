"""Private (cli): ``--model timm:NAME`` — a model of the optional ``timm`` package, built without
pretrained weights (polyprune never downloads): random weights from ``--seed``, or a state_dict
file given with ``--weights FILE``."""

from __future__ import annotations

from types import ModuleType

from torch import nn

from ._errors import CLIError
from ._weights import build_random

__all__ = ["build_timm", "check_timm", "timm_input_size"]


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError as exc:
        raise CLIError(
            "--model timm:NAME needs the timm package, which is not installed: "
            "pip install 'polyprune[timm]'"
        ) from exc
    return timm


def check_timm(name: str) -> None:
    """A :class:`CLIError` unless timm is installed and knows the model ``name``."""
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:4]}*")[:8] if len(name) >= 4 else []
        hint = f"; close: {', '.join(close)}" if close else ""
        raise CLIError(f"unknown timm model {name!r} (see timm.list_models()){hint}")


def build_timm(name: str, seed: int, *, warn: bool = True) -> nn.Module:
    """The timm model ``name`` with ``pretrained=False``, its random weights drawn from ``seed``
    as for a torchvision model (the same seed, the same weights); ``warn``: one warning line."""
    timm = _timm()
    return build_random(
        lambda: timm.create_model(name, pretrained=False),
        f"timm:{name}",
        seed,
        "--weights FILE (a state_dict; timm's pretrained weights are never downloaded)",
        warn=warn,
    )


def timm_input_size(model: nn.Module) -> int:
    """The input size timm gives ``model`` (its ``pretrained_cfg``), 224 without one."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 224, 224))
    return int(size[-1])
