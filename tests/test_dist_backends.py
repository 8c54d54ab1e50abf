"""The one place that says which torch.distributed backend serves which device."""

from __future__ import annotations

import pytest
import torch

from polyprune import _dist
from polyprune._dist import backends


def test_the_shipped_backends() -> None:
    assert _dist.backend_for("cpu") == _dist.Backend("gloo")
    assert _dist.backend_for("cuda:1") == _dist.Backend("nccl", pin_device=True)
    assert _dist.backend_for(torch.device("cuda")).side == "gloo"
    assert backends.side_backend() == "gloo"  # no process group: polyprune's side group is gloo


def test_a_new_backend_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))
    with pytest.raises(ValueError, match=r"no torch.distributed backend is registered for 'meta'"):
        _dist.backend_for("meta")
    _dist.register_backend("meta", _dist.Backend("mpi", side="mpi"))
    assert _dist.backend_for("meta").process_group == "mpi"
    _dist.select_local_device("meta")  # does not pin: nothing to select
    with pytest.raises(TypeError, match="backend must be a Backend"):
        _dist.register_backend("meta", "mpi")  # type: ignore[arg-type]


def test_the_launcher_uses_the_registered_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from polyprune.cli import _launch

    seen: list[str] = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **_: seen.append(backend))
    monkeypatch.setattr(_dist, "shutdown", lambda: seen.append("shut down"))
    monkeypatch.setattr(backends, "_BACKENDS", {"cpu": _dist.Backend("mpi")})
    with _launch.process_group("cpu"):
        assert seen == ["mpi"]
    assert seen == ["mpi", "shut down"]
