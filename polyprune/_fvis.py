"""Private: image parameterizations and random transforms for feature visualization.

Written after the approach of Olah et al. (Distill, 2017) and the ``lucent`` library: the image is
parameterized by a scaled Fourier spectrum (so optimisation favours low frequencies) in a
decorrelated colour space, squashed to [0, 1] with a sigmoid; random jitter, scaling and
rotation every step make the result robust instead of adversarial noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FourierImage", "random_transform"]

# Square root of the colour correlation of natural images (ImageNet), from its SVD; the columns
# are normalised below so the largest has unit norm.
_COLOR_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def _frequencies(h: int, w: int) -> Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """A batch of RGB images parameterized by scaled, decorrelated Fourier coefficients."""

    scale: Tensor

    def __init__(
        self, batch: int, size: tuple[int, int], *, decay: float = 1.0, std: float = 0.01,
        generator: torch.Generator | None = None, channels: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        h, w = size
        freqs = _frequencies(h, w)
        self.size = size
        self.channels = channels
        self.register_buffer("scale", 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay)
        shape = (batch, channels, *freqs.shape, 2)
        self.spectrum = nn.Parameter(std * torch.randn(shape, generator=generator))

    def forward(self) -> Tensor:
        h, w = self.size
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfftn(spectrum, s=(h, w), norm="ortho") / 4.0
        if self.channels == 3:
            image = torch.einsum("bchw,dc->bdhw", image, _COLOR.to(image))
        return torch.sigmoid(image)


def random_transform(images: Tensor, generator: torch.Generator, strength: float = 1.0) -> Tensor:
    """Pad, jitter, rescale and rotate a batch at random (the same draw for the whole batch)."""
    h, w = images.shape[2:]
    pad = max(1, round(0.05 * min(h, w) * strength))
    x = F.pad(images, (pad, pad, pad, pad), mode="constant", value=0.5)

    def _int(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    jitter = max(1, pad // 2)
    dy, dx = _int(-jitter, jitter), _int(-jitter, jitter)
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    scale = 1.0 + (float(torch.rand(1, generator=generator)) - 0.5) * 0.2 * strength
    angle = math.radians((float(torch.rand(1, generator=generator)) - 0.5) * 20.0 * strength)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    return x[..., top : top + h, left : left + w]
