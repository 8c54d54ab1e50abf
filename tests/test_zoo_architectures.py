"""The torchvision classification zoo: every map layer runs, crops are exact, the rest is refused.

Random weights (nothing is downloaded). A few representative models always run; the whole zoo
runs under ``pytest -m slow`` (CI runs it after the default suite).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from helpers import assert_same_top, check_crops, layer_output
from torch import nn

import polyprune as pp

#: Input size per model: the smallest of 128/224 it accepts (vit and maxvit need 224).
SIZE = {"alexnet": 128, "maxvit_t": 224, "inception_v3": 128}
REPRESENTATIVE = [
    "mobilenet_v3_small",  # squeeze-excitation gating: whole-image fields
    "shufflenet_v2_x0_5",  # channel shuffle (view/transpose), chunk
    "densenet121",  # layers called with a list of maps
    "convnext_tiny",  # permute to channels-last and back, LayerNorm/Linear on channels
    "googlenet",  # transform_input (getitem/unsqueeze on the input), ceil-mode pools
    "inception_v3",  # functional pools
    "efficientnet_v2_s",  # stochastic depth
    "squeezenet1_1",
]


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    options = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    if name == "googlenet":
        options["transform_input"] = True  # what pretrained weights come with
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None, **options).eval()


def _size(name: str) -> int:
    return 224 if name.startswith("vit") else SIZE.get(name, 128)


def _map_layers(model: nn.Module, size: int, count: int) -> list[str]:
    """``count`` layers spread over the network whose output is an (N, C, H, W) map > 1×1."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, out: object) -> None:
        if isinstance(out, torch.Tensor):
            shapes.setdefault(name, tuple(out.shape))

    handles = [
        m.register_forward_hook(lambda mod, a, out, n=n: record(n, out))
        for n, m in model.named_modules()
        if n and n.count(".") <= 3
    ]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    maps = [n for n, s in shapes.items() if len(s) == 4 and s[2] * s[3] > 1 and s[1] != s[3]]
    step = max(1, len(maps) // count)
    return maps[step // 2 :: step][:count]


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_representative_models_crop_exactly(name):
    model, size = _model(name), _size(name)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    how = {layer: check_crops(model, layer, x) for layer in _map_layers(model, size, 3)}
    assert len(how) == 3
    assert "fallback" not in how.values(), how  # every one of these has an exact field now


def test_squeeze_excitation_units_see_the_whole_image():
    model = _model("mobilenet_v3_small")
    rf = pp.ReceptiveField.of(model, "features.4", 96)
    assert rf.whole_image and rf.size == (96, 96) and rf.box() == (0, 0, 96, 96)
    assert rf.crop(torch.rand(1, 3, 96, 96)).images.shape[2:] == (96, 96)
    assert pp.ReceptiveField.probe(model, "features.4", 96, trials=2) == (0, 0, 96, 96)


def test_densenet_layers_called_with_a_list_have_their_field():
    model = _model("densenet121")
    rf = pp.ReceptiveField.of(model, "features.denseblock2.denselayer3", 224)
    assert rf.output_size == (28, 28) and rf.stride == (8, 8) and rf.size == (111, 111)


@pytest.mark.parametrize(
    ("name", "layer", "match"),
    [
        ("convnext_tiny", "features.1.0.block.3", r"channels-last maps \(1, 32, 32, 384\)"),
        ("swin_t", "features.1", r"channels-last maps \(1, 32, 32, 96\)"),
        ("vit_b_16", "encoder.layers.encoder_layer_0", r"\(1, 197, 768\).*sequence of tokens"),
    ],
)
def test_layers_that_are_not_channels_first_maps_are_refused(name, layer, match):
    model, size = _model(name), _size(name)
    x = torch.rand(2, 3, size, size)
    for crop in (True, False):
        with pytest.raises(ValueError, match=match):
            pp.top_activating(model, pp.Unit(layer, 0), x, k=1, crop=crop, progress=False)
    with pytest.raises(ValueError, match=match):  # validate with a sample says so too
        pp.Unit(layer, 0).validate(model, x)


def test_a_model_that_refuses_crops_falls_back_to_whole_images():
    model = _model("vit_b_16")  # asserts a 224×224 input: the 16×16 crop of conv_proj fails
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="does not run on crops .*Wrong image height"):
        top = pp.top_activating(model, pp.Unit("conv_proj", 3), x, k=1, progress=False)
    assert top.field is None


def test_a_layer_behind_window_attention_falls_back_to_whole_images_with_one_warning():
    model = _model("swin_t")
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="whole images are used instead of crops") as caught:
        top = pp.top_activating(model, pp.Unit("permute", 5), x, k=2, progress=False)
    assert len([w for w in caught if "whole images" in str(w.message)]) == 1
    assert top.field is None
    reference = layer_output(model, "permute", x)[:, 5, 1, 1]
    assert_same_top(top.indices, top.values, reference, rtol=1e-4, atol=1e-5)


def test_an_untraceable_model_crops_with_a_measured_field():
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace this
                x = torch.relu(self.a(x))
            return self.b(x)

    model = Gated().eval()
    rf = pp.ReceptiveField.measure(model, "b", 24)
    x = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    top = pp.top_activating(model, pp.Unit("b", 1), x, k=3, crop=rf, keep_inputs=True,
                            progress=False)  # fmt: skip
    assert top.field is rf and top.inputs is not None and top.inputs.shape[2:] == (5, 5)
    reference = layer_output(model, "b", x)[:, 1, 4, 4]
    assert_same_top(top.indices, top.values, reference)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(torchvision.models.list_models(torchvision.models)))
def test_every_torchvision_classification_model(name):
    model, size = _model(name), _size(name)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    outcomes = [check_crops(model, layer, x) for layer in _map_layers(model, size, 3)]
    assert outcomes and set(outcomes) <= {"crop", "whole image", "fallback", "refused"}
