"""Training of the zoo's shipped weights (used by ``examples/train_zoo.py``, not at run time).

Everything is seeded and runs on the CPU in one thread, so a rerun reproduces the weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as valid
from ._concepts import concept_images
from ._digits import digits
from ._models import architecture, eval_data, model_card
from ._planted import PLANTED_SIZE, detector
from ._render import CONCEPTS, block_seed, render

Log = Callable[[str], None]
_PRUNE_SEED = 271828


def _centre(out: Tensor) -> Tensor:
    """The centre unit ``((H - 1) // 2, (W - 1) // 2)`` of every channel: ``(N, C)``."""
    return out[:, :, (out.shape[2] - 1) // 2, (out.shape[3] - 1) // 2]


def concept_batch(step: int, seed: int, size: int, n: int = 128) -> tuple[Tensor, Tensor]:
    """Batch ``step`` of a training stream: ``n`` images over all concepts, balanced labels."""
    gen = torch.Generator().manual_seed(block_seed(seed, 7, step))
    labels = (torch.arange(n) % len(CONCEPTS))[torch.randperm(n, generator=gen)]
    return render(CONCEPTS, labels, size, gen), labels


def train_detector(
    concept: str, steps: int = 1000, lr: float = 5e-3, seed: int = 0, off_weight: float = 4.0
) -> nn.Sequential:
    """Train the planted detector of ``concept`` on ``concept_images(size=32)``-like batches.

    The centre unit is regressed to 1 on the concept; on other concepts positive outputs are
    penalised with weight ``off_weight`` and negative ones with 0.25 (off means "at or a little
    below 0").
    """
    k = CONCEPTS.index(concept)
    torch.manual_seed(seed * 100 + k)
    det = detector()
    for m in det.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.constant_(m.bias, 0.05)
    opt = torch.optim.Adam(det.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    weight_pos = float(len(CONCEPTS) - 1)
    for step in range(steps):
        images, labels = concept_batch(step, 1_000 + seed * 100 + k, PLANTED_SIZE)
        out = _centre(det(images))[:, 0]
        pos = labels == k
        neg_loss = off_weight * F.relu(out) ** 2 + 0.25 * F.relu(-out) ** 2
        loss = torch.where(pos, weight_pos * (out - 1) ** 2, neg_loss).mean()
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
    return prune_dead(det.eval())


def prune_dead(det: nn.Sequential, tol: float = 0.01) -> nn.Sequential:
    """Zero the hidden channels of a detector that do not matter, so its circuit is exact.

    A channel is removed (incoming kernels, bias and outgoing kernels set to 0) when doing so
    changes the centre output by less than ``tol`` on every one of 896 fixed concept images.
    Channels are tried in order, each on the detector as pruned so far.
    """
    images, _ = concept_images(896, size=PLANTED_SIZE, seed=_PRUNE_SEED)
    convs = [m for m in det if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for layer, conv in enumerate(convs[:-1]):
            after = convs[layer + 1]
            for ch in range(conv.out_channels):
                before = _centre(det(images))
                saved = (conv.weight[ch].clone(), after.weight[:, ch].clone())
                bias = conv.bias
                saved_bias = None if bias is None else bias[ch].clone()
                conv.weight[ch] = 0
                after.weight[:, ch] = 0
                if bias is not None:
                    bias[ch] = 0
                if float((_centre(det(images)) - before).abs().max()) >= tol:
                    conv.weight[ch], after.weight[:, ch] = saved
                    if bias is not None and saved_bias is not None:
                        bias[ch] = saved_bias
    return det


def train_planted(steps: int = 1000, seed: int = 0, log: Log = print) -> dict[str, Tensor]:
    """Train every concept's detector; return the state dict shipped as ``weights/planted.pt``."""
    valid.integer("steps", steps, low=1)
    valid.seed("seed", seed)
    state: dict[str, Tensor] = {}
    for concept in CONCEPTS:
        start = time.perf_counter()
        det = train_detector(concept, steps=steps, seed=seed)
        for key, value in det.state_dict().items():
            state[f"{concept}.{key}"] = value.detach().clone()
        log(f"planted detector {concept!r}: {time.perf_counter() - start:.1f} s")
    return state


def _fit(
    model: nn.Module,
    batches: Callable[[int], tuple[Tensor, Tensor]],
    steps: int,
    lr: float,
) -> None:
    """Adam, one-cycle schedule, cross-entropy; ``batches(step)`` gives ``(images, classes)``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for step in range(steps):
        images, classes = batches(step)
        loss = F.cross_entropy(model(images), classes)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
    model.eval()


def _shift(images: Tensor, gen: torch.Generator, max_shift: float) -> Tensor:
    """Translate each image by a random offset of up to ``max_shift`` pixels (zero fill)."""
    n, _, h, w = images.shape
    offset = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = offset[:, 0] * 2 / w
    theta[:, 1, 2] = offset[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def train_concepts_merged(steps: int = 800, seed: int = 0) -> nn.Module:
    """Train ``"concepts-merged"`` on fresh concept batches (128 images, 32 px) each step."""
    card = model_card("concepts-merged")
    torch.manual_seed(seed)
    model = architecture("concepts-merged")

    def batches(step: int) -> tuple[Tensor, Tensor]:
        images, labels = concept_batch(step, 5_000 + seed, card.input_shape[1])
        return images, card.to_class(labels)

    _fit(model, batches, steps, lr=3e-3)
    return model


def train_digits_merged(steps: int = 800, seed: int = 0) -> nn.Module:
    """Train ``"digits-merged"`` on ``digits("train")`` with random shifts of up to 2 px."""
    card = model_card("digits-merged")
    torch.manual_seed(seed)
    model = architecture("digits-merged")
    images, labels = digits("train")
    classes = card.to_class(labels)
    gen = torch.Generator().manual_seed(seed)

    def batches(step: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, images.shape[0], (64,), generator=gen)
        return _shift(images[idx], gen, 2.0), classes[idx]

    _fit(model, batches, steps, lr=3e-3)
    return model


def accuracy(model: nn.Module, name: str) -> float:
    """Top-1 accuracy of ``model`` on ``eval_data(name)`` against the card's classes."""
    valid.model("model", model)
    images, labels = eval_data(name)
    with torch.no_grad():
        pred = model(images).argmax(dim=1)
    return float((pred == model_card(name).to_class(labels)).float().mean())


def unit_split(
    model: nn.Module, name: str, layer: int, channel: int | None = None
) -> tuple[Tensor, Tensor]:
    """Fractions of a unit's ``unit_top_k`` strongest held-out images showing each merged concept.

    Per channel of ``features[layer]`` (centre unit, pre-ReLU, on ``eval_data(name)``); shape
    ``(C,)`` each, or ``(1,)`` for one ``channel``.
    """
    card = model_card(name)
    images, labels = eval_data(name)
    with torch.no_grad():
        acts = _centre(model.features[: layer + 1](images))  # type: ignore[index,operator]
    if channel is not None:
        acts = acts[:, channel : channel + 1]
    top = acts.topk(card.unit_top_k, dim=0).indices  # (k, C)
    a, b = (card.concepts.index(c) for c in card.merged)
    return (labels[top] == a).float().mean(0), (labels[top] == b).float().mean(0)


def recommend_unit(model: nn.Module, name: str) -> tuple[str, int, float, float]:
    """The conv unit whose top held-out images split most evenly between the merged concepts.

    Searches the channels of ``features.6`` and ``features.9``. Among units whose top images are at
    least 80 % of the merged class (if none, all units), pick the one maximising the smaller of the
    two concept fractions. Returns ``(layer, channel, frac_a, frac_b)``.
    """
    valid.model("model", model)
    best: tuple[float, str, int, float, float] | None = None
    for layer in (6, 9):
        fa, fb = unit_split(model, name, layer)
        for c in range(fa.numel()):
            a, b = float(fa[c]), float(fb[c])
            key = min(a, b) + (10.0 if a + b >= 0.8 else 0.0)
            if best is None or key > best[0]:
                best = (key, f"features.{layer}", c, a, b)
    assert best is not None
    return best[1:]


def train(name: str, *, steps: int = 800, seed: int = 0) -> nn.Module:
    """Retrain a shipped classifier (``"concepts-merged"`` or ``"digits-merged"``) from scratch.

    Deterministic on one thread (``examples/train_zoo.py`` reproduces the shipped weights with
    it); the planted network's detectors are :func:`train_planted`.
    """
    valid.integer("steps", steps, low=1)
    valid.seed("seed", seed)
    trainers = {"concepts-merged": train_concepts_merged, "digits-merged": train_digits_merged}
    valid.choice("name", name, sorted(trainers))
    return trainers[name](steps=steps, seed=seed)
