"""Analysis and synthesis transforms: the convolutions between pixels and latents.

The layout follows Balle et al. (2018): four stride-2 5x5 convolutions with generalized
divisive normalization (GDN) between them, so the latent grid is 1/16 of the image in each
direction. GDN is a better fit than ReLU for image statistics at the same width, which lets
the transforms stay narrow enough to run on a laptop CPU.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

STRIDE = 16
"""Total downsampling of the analysis transform; images are padded to a multiple of this."""


class GDN(nn.Module):
    """Generalized divisive normalization, y = x / sqrt(beta + gamma @ x^2) (or its inverse).

    beta and gamma are kept non-negative by squaring an unconstrained parameter, with a small
    floor on beta so the division is always defined.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_raw = nn.Parameter(torch.ones(channels))
        self.gamma_raw = nn.Parameter(0.1 ** 0.5 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta_raw.square() + 1e-6
        gamma = self.gamma_raw.square()
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class Analysis(nn.Sequential):
    """Image (B, 3, H, W) in [0, 1] -> latent (B, latent, H/16, W/16)."""

    def __init__(self, channels: int, latent: int) -> None:
        super().__init__(
            _down(3, channels), GDN(channels),
            _down(channels, channels), GDN(channels),
            _down(channels, channels), GDN(channels),
            _down(channels, latent),
        )


class Synthesis(nn.Sequential):
    """Latent (B, latent, h, w) -> image (B, 3, 16h, 16w), not yet clamped."""

    def __init__(self, channels: int, latent: int) -> None:
        super().__init__(
            _up(latent, channels), GDN(channels, inverse=True),
            _up(channels, channels), GDN(channels, inverse=True),
            _up(channels, channels), GDN(channels, inverse=True),
            _up(channels, 3),
        )
