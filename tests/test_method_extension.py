"""The one method contract, as a user writes it: a learned-mask method (not a scorer) in a few
lines, usable by name in fit_subnetwork, study and the command line; one rule for ``keep`` and
for the CS settings; CS objectives registered the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import assert_restored, installed_plugin, snapshot, study_by_plugin

import polyprune as pp
from polyprune import zoo

# What a user writes (under 25 lines): sigmoid masks trained by Adam to keep the unit firing on
# the members and silent on the rest, with the public ContinuousSparsifier as the mask holder.
USER_METHOD = '''
import torch
from polyprune import ContinuousSparsifier, Method


class Contrast(Method, name="contrast"):
    """Learned masks: the unit high on the members, low on the rest, few weights."""

    def fit(self, job):
        layer, (i, j) = job.model.get_submodule(job.unit.layer), job.unit.position
        seen = {}
        hook = layer.register_forward_hook(lambda m, args, out: seen.update(out=out))
        try:
            with ContinuousSparsifier(job.model, up_to=job.unit, init=0.6) as masks:
                adam = torch.optim.Adam(masks.parameters(), lr=0.1)
                for _ in range(30):
                    job.model(job.images)
                    a = seen["out"][:, job.unit.channel, i, j]
                    gap = a[job.members].mean() - a[~job.members].mean()
                    loss = -gap / a.detach().std() + 0.1 * masks.penalty()
                    adam.zero_grad()
                    loss.backward()
                    adam.step()
                return masks.hard_masks()
        finally:
            hook.remove()
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with installed_plugin(tmp_path_factory.mktemp("plugin"), "my_methods", USER_METHOD) as name:
        yield name


def test_the_user_method_is_short_registered_and_not_a_scorer(plugin: str) -> None:
    code = [line for line in USER_METHOD.strip().splitlines() if line.strip()]
    assert len(code) < 25
    assert "contrast" in pp.methods.available() and "contrast" in pp.subnetwork.methods()
    assert "contrast" not in pp.scoring.available()
    method = pp.methods.create("contrast")
    assert isinstance(method, pp.Method) and not isinstance(method, pp.scoring.BaseScorer)


def test_fit_subnetwork_by_name_keeps_the_model_and_finds_the_circuit(plugin: str) -> None:
    net = zoo.handbuilt()
    members = torch.tensor([True, True, True, False, False, False])
    before = snapshot(net.model)
    sub = pp.fit_subnetwork(net.model, net.unit, net.images, members, "contrast", keep=0.5)
    assert_restored(net.model, before)
    assert sub.method == "contrast" and sub.unit.position is not None
    assert sub.raw_masks is not None
    assert 0 < sub.kept_fraction <= sub.raw_masks.kept_fraction() < 1  # its own kept fraction
    assert sub.raw_masks.kept_fraction() != pytest.approx(0.5)  # keep=0.5 is not used
    assert pp.evaluation.circuit_scores(sub.masks, net.truth).precision == 1.0  # no stray kernel


def test_study_by_name(plugin: str) -> None:
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(600, size=zoo.PLANTED_SIZE, seed=2)
    result = pp.study(
        model, pp.Unit(*zoo.PLANTED_TARGET), images, k=120, methods=["contrast", "snip"],
        progress=False,
    )  # fmt: skip
    assert result.is_polysemantic and set(result.subnetworks) == {"contrast", "snip"}
    assert all(s.method == "contrast" for s in result.subnetworks["contrast"].values())
    assert result.config["keep"] == pp.methods.DEFAULT_KEEP
    snip = result.subnetworks["snip"][0]  # the path-aware cut: DEFAULT_KEEP on kept paths
    assert snip.kept_fraction == pytest.approx(pp.methods.DEFAULT_KEEP, abs=0.01)
    assert snip.kept_fraction >= pp.methods.DEFAULT_KEEP


def test_cli_by_name_with_import(plugin: str, tmp_path: Path, capsys) -> None:
    code, out = study_by_plugin(tmp_path, "contrast", plugin)
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["methods"] == ["contrast"]


def _cluster() -> tuple[zoo.HandBuilt, torch.Tensor]:
    return zoo.handbuilt(), torch.tensor([True, True, True, False, False, False])


def test_keep_precedence_argument_then_instance_then_default() -> None:
    net, members = _cluster()

    def kept(method: str | pp.Method, keep: float | None) -> float:  # on kept paths
        return pp.fit_subnetwork(net.model, net.unit, net.images, members, method,
                                 keep=keep).kept_fraction  # fmt: skip

    assert kept(pp.Magnitude(keep=0.2), 0.5) == pytest.approx(0.5, abs=0.05)  # argument
    assert kept(pp.Magnitude(keep=0.2), None) == pytest.approx(0.2, abs=0.05)  # instance
    assert kept("magnitude", None) == pytest.approx(pp.methods.DEFAULT_KEEP, abs=0.05)
    assert pp.methods.resolve_keep(None, pp.Magnitude()) == pp.methods.DEFAULT_KEEP


def test_study_follows_the_same_keep_rule() -> None:
    model, _ = zoo.planted_network()
    images, _ = zoo.concept_images(600, size=zoo.PLANTED_SIZE, seed=2)
    unit = pp.Unit(*zoo.PLANTED_TARGET)
    own = pp.study(model, unit, images, k=120, methods=[pp.Magnitude(keep=0.2)], progress=False)
    given = pp.study(model, unit, images, k=120, methods=[pp.Magnitude(keep=0.2)], keep=0.1,
                     top=own.top, progress=False)  # fmt: skip
    assert own.is_polysemantic
    for result, expected in ((own, 0.2), (given, 0.1)):
        for sub in result.subnetworks["magnitude"].values():  # the path-aware cut
            assert sub.kept_fraction == pytest.approx(expected, abs=0.01)
            assert sub.kept_fraction >= expected


def test_cs_is_a_method_and_config_follows_the_same_rule() -> None:
    net, members = _cluster()
    cs = pp.ContinuousSparsification(pp.CSConfig(epochs=3), progress=False)
    assert pp.methods.create("cs").name == "cs" and isinstance(cs, pp.Method)
    own = pp.fit_subnetwork(net.model, net.unit, net.images, members, cs)
    given = pp.fit_subnetwork(
        net.model, net.unit, net.images, members, cs, config=pp.CSConfig(epochs=4), progress=False
    )
    default = pp.fit_subnetwork(net.model, net.unit, net.images, members, "cs", progress=False)
    assert [len(s.history["loss"]) for s in (own, given, default)] == [3, 4, pp.CSConfig().epochs]
    with pytest.raises(TypeError, match=r"config must be a polyprune\.CSConfig"):
        pp.ContinuousSparsification({"epochs": 3})  # type: ignore[arg-type]


def test_study_cs_keyword_is_a_deprecated_alias_of_config() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    x = torch.rand(20, 3, 8, 8)
    with (
        pytest.warns(DeprecationWarning, match=r"study\(cs=\.\.\.\) is deprecated"),
        pytest.raises(TypeError, match="give the CS settings once"),
    ):
        pp.study(model, pp.Unit("0", 0), x, cs=pp.CSConfig(), config=pp.CSConfig())


def test_a_cs_loss_registers_by_name_and_trains() -> None:
    from polyprune.sparsify import CSLoss, LossContext

    class Louder(CSLoss, name="louder_on_members", lam=0.2, lr=2e-3, fade=0.5):
        def __call__(
            self, a: torch.Tensor, d: torch.Tensor, y: torch.Tensor, shift: torch.Tensor,
            ctx: LossContext,
        ) -> torch.Tensor:  # fmt: skip
            return -(a[y] / ctx.member_scale).mean() + (a[~y] / ctx.member_scale).square().mean()

    assert "louder_on_members" in pp.sparsify.losses()
    config = pp.CSConfig(loss="louder_on_members", epochs=3)
    assert (config.penalty_weight, config.learning_rate) == (0.2, 2e-3)
    assert config.fade_fraction == 0.5  # the class statement's fade=
    net, members = _cluster()
    sub = pp.fit_subnetwork(net.model, net.unit, net.images, members, config=config, progress=False)
    assert len(sub.history["objective"]) == 3 and sub.calibration is None  # no BCE shift
    with pytest.raises(ValueError, match=r"loss must be one of .*'louder_on_members'"):
        pp.CSConfig(loss="nope")


def test_cs_defaults_follow_the_objective_unless_given() -> None:
    # lam, lr and fade: the objective's own (CSLoss class attributes) unless given
    both, separate = pp.CSConfig(), pp.CSConfig(loss="separate")
    assert (both.learning_rate, both.fade_fraction) == (1e-3, 0.8)
    assert (separate.learning_rate, separate.fade_fraction) == (5e-3, 0.8)
    assert pp.CSConfig(fade=0.0).fade_fraction == 0.0 and pp.CSConfig.paper().fade_fraction == 0.0
    assert pp.CSConfig(fade=0.95).fade_fraction == 0.95
    with pytest.raises(ValueError, match="fade"):
        pp.CSConfig(fade=1.5)
    # the default and the same values given explicitly fit the same subnetwork
    net, members = _cluster()
    fits = [
        pp.fit_subnetwork(net.model, net.unit, net.images, members, config=c, progress=False)
        for c in (pp.CSConfig(epochs=4), pp.CSConfig(epochs=4, lr=1e-3, fade=0.8))
    ]
    assert all(torch.equal(fits[0].masks[n], fits[1].masks[n]) for n in fits[0].masks)
    assert fits[0].history["objective"] == fits[1].history["objective"]


def test_a_method_returning_something_else_is_refused() -> None:
    class Broken(pp.Method):
        def fit(self, job: pp.methods.FitJob) -> Any:  # not Masks: what is refused
            return {"0.weight": torch.ones(1)}

    net, members = _cluster()
    with pytest.raises(TypeError, match=r"Broken.fit returned dict, expected polyprune.Masks"):
        pp.fit_subnetwork(net.model, net.unit, net.images, members, Broken())
