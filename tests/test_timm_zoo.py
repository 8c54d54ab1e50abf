"""One model of every timm CNN family (issue 24 §4), random weights, one middle convolution
each: ``top_activating`` crops exactly (checked against the unit on whole images), sees the whole
image, falls back to whole images with a warning, or is refused — never a raw error. The table
in docs/timm.md is this sweep's outcome: ``pytest -m slow`` fails when they differ, and
``python tests/test_timm_zoo.py`` writes it again.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from helpers import check_crops
from torch import nn

import polyprune as pp

PAGE = Path(__file__).parents[1] / "docs" / "timm.md"
BEGIN, END = "<!-- timm-table: python tests/test_timm_zoo.py -->", "<!-- /timm-table -->"

#: family -> the model of it the sweep builds
FAMILIES = {
    "ResNet": "resnet18", "ResNet-D": "resnet18d", "VGG": "vgg11",
    "EfficientNet": "efficientnet_b0", "MobileNetV3": "mobilenetv3_small_050",
    "EfficientNetV2 (TF 'SAME')": "tf_efficientnetv2_b0", "MixNet": "mixnet_s",
    "ResNeSt": "resnest14d", "RegNetX": "regnetx_002", "RegNetY": "regnety_002",
    "DenseNet": "densenet121", "DLA": "dla34", "DPN": "dpn68", "GhostNet": "ghostnet_100",
    "HRNet": "hrnet_w18_small", "MnasNet": "mnasnet_small", "ReXNet": "rexnet_100",
    "SelecSLS": "selecsls42b", "SKNet": "skresnet18", "CSPResNet": "cspresnet50",
    "DarkNet": "darknet53", "Res2Net": "res2net50_14w_8s", "NF-ResNet": "nf_resnet26",
    "NFNet": "nfnet_f0",
    "ConvNeXt": "convnext_atto", "RepVGG": "repvgg_a0", "LCNet": "lcnet_050",
    "TinyNet": "tinynet_e", "FBNet": "fbnetc_100", "HardCoReNAS": "hardcorenas_a",
    "Inception-v3": "inception_v3", "Xception": "xception41",
    "CoAtNet (hybrid)": "coatnet_0_rw_224",
}  # fmt: skip
#: input size per model: 96, or the smallest the model accepts
SIZE = {"coatnet_0_rw_224": 224}


def outcome(name: str) -> tuple[str, str]:
    """``(layer, outcome)`` of the model ``name`` at its middle Conv2d."""
    import timm

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False).eval()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    layer = convs[len(convs) // 2]
    size = SIZE.get(name, 96)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return layer, check_crops(model, layer, x)


def table(rows: dict[str, tuple[str, str, str]]) -> str:
    lines = ["| family | model | layer | outcome |", "|---|---|---|---|"]
    lines += [f"| {fam} | `{m}` | `{layer}` | {how} |" for fam, (m, layer, how) in rows.items()]
    return "\n".join(lines)


def documented() -> dict[str, tuple[str, str]]:
    """model -> (layer, outcome) from the table in docs/timm.md."""
    text = PAGE.read_text()
    body = text[text.index(BEGIN) : text.index(END)]
    rows = re.findall(r"^\| [^|]+ \| `([^`]+)` \| `([^`]+)` \| ([a-z ]+) \|$", body, re.M)
    return {m: (layer, how) for m, layer, how in rows}


def test_the_table_lists_every_family():
    assert set(documented()) == set(FAMILIES.values())
    assert len(FAMILIES) >= 25


#: layers whose exact crop goes through what used to fall back: "SAME" padding with a stride
#: (TensorFlow ports), nearest upsampling in HRNet's fusion layers (docs/timm.md); (model,
#: layer, input size, field size)
CROPS = [
    ("tf_efficientnetv2_b0", "blocks.2.1.conv_pwl", 96, 43),
    ("hrnet_w18_small", "stage3.0.branches.0.0.conv1", 160, 99),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layer", "size", "field"), CROPS)
def test_crops_through_same_padding_and_upsampling(name, layer, size, field):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert check_crops(model, layer, x) == "crop"
    assert pp.ReceptiveField.of(model, layer, size).size == (field, field)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_every_timm_family(name):
    pytest.importorskip("timm")
    stale = "docs/timm.md is stale: python tests/test_timm_zoo.py"
    assert outcome(name) == documented()[name], stale


if __name__ == "__main__":
    torch.set_num_threads(1)
    rows = {fam: (m, *outcome(m)) for fam, m in FAMILIES.items()}
    text = PAGE.read_text()
    head, tail = text[: text.index(BEGIN) + len(BEGIN)], text[text.index(END) :]
    PAGE.write_text(f"{head}\n{table(rows)}\n{tail}")
    print(table(rows))
