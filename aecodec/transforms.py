"""Analysis and synthesis transforms: the convolutions between pixels and latents.

The layout follows Balle et al. (2018): four stride-2 5x5 convolutions with generalized
divisive normalization (GDN) between them, so the latent grid is 1/16 of the image in each
direction. GDN is a better fit than ReLU for image statistics at the same width, which lets
the transforms stay narrow enough to run on a laptop CPU.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

STRIDE = 16
"""Total downsampling of the analysis transform; images are padded to a multiple of this."""


GAMMA_PEDESTAL = 2.0 ** -36
"""Where GDN's off-diagonal gamma starts, as gamma_raw = sqrt(pedestal) (CompressAI's pedestal)."""


class GDN(nn.Module):
    """Generalized divisive normalization, y = x / sqrt(beta + gamma @ x^2) (or its inverse).

    beta and gamma are kept non-negative by squaring an unconstrained parameter, with a small
    floor on beta so the division is always defined. The off-diagonal gamma_raw starts at
    sqrt(GAMMA_PEDESTAL), not 0: a square's gradient vanishes at 0, so entries started there
    could never move and every shipped model before the lapped transforms kept a diagonal
    gamma, a channel-wise gain rather than a normalization. At 2^-18 the gradient is small but
    not zero, and Adam scales each step to the learning rate, so they move at once.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_raw = nn.Parameter(torch.ones(channels))
        gamma = torch.full((channels, channels), GAMMA_PEDESTAL) + 0.1 * torch.eye(channels)
        self.gamma_raw = nn.Parameter(gamma.sqrt())

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

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """In channels-last layout: the same sums, and the transposed convolutions take 89 ms
        instead of 148 for a Kodak-sized image on two CPU threads."""
        return super().forward(latent.contiguous(memory_format=torch.channels_last))


class LappedAnalysis(nn.Module):
    """Image -> latent as a linear lapped transform plus the GDN stack as a residual branch.

    The linear path is one stride-16 convolution with 32x32 kernels: initialised with the KLT
    of 16x16 training blocks in each kernel's centre (``initialise``), it is a block PCA, which
    holds Kodak at 37.4 dB with 192 coefficients where the plain GDN stack trained for 45000
    steps held 28.7. Its kernels can learn to overlap their neighbours (a lapped transform, so
    no block edges), and the residual branch starts at zero (its last convolution zeroed), so
    training starts from the linear codec and only has to climb.
    """

    def __init__(self, channels: int, latent: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(3, latent, 2 * STRIDE, stride=STRIDE, padding=STRIDE // 2)
        self.residual = Analysis(channels, latent)
        _zero(self.residual[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.residual(x)

    @torch.no_grad()
    def initialise(self, basis: torch.Tensor, mean: torch.Tensor) -> None:
        """Project onto ``basis`` (latent, 3, 16, 16), orthonormal rows, after removing the
        channel means ``mean`` (3,)."""
        _centre(self.linear.weight, basis)
        self.linear.bias.copy_(-torch.einsum("lchw,c->l", basis, mean))


class LappedSynthesis(nn.Module):
    """Latent -> image: the transpose of ``LappedAnalysis``, linear path plus a zero-started
    inverse-GDN residual branch.

    With ``detail`` > 0 the last ``detail`` latent channels are *detail coefficients* on a
    fixed orthonormal basis of 16x16 blocks (``detail``, (detail, 3, 16, 16); ``grow.add_detail``
    fits it to what a trained pair misses). Within that subspace the image is the linear
    path's plus the coded coefficients, and the residual branch is kept out of it; the
    coefficients are what the linear path misses there (``detail_of``, which the model's
    ``analyse`` calls: a lifting step). A perfect quantizer then gives the input's exact
    detail, and a coarse one that rounds the coefficients to 0 leaves the linear path's.
    """

    def __init__(self, channels: int, latent: int, detail: int = 0) -> None:
        super().__init__()
        self.linear = nn.ConvTranspose2d(latent - detail, 3, 2 * STRIDE, stride=STRIDE, padding=STRIDE // 2)
        self.residual = Synthesis(channels, latent - detail)
        _zero(self.residual[-1])
        self.detail = nn.Parameter(torch.zeros(detail, 3, STRIDE, STRIDE)) if detail else None

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        base = latent[:, : self.linear.in_channels]
        if self.detail is None:
            return self._linear(base) + self.residual(base)
        residual = self.residual(base)
        residual = residual - F.conv_transpose2d(F.conv2d(residual, self.detail, stride=STRIDE), self.detail, stride=STRIDE)
        coded = latent[:, self.linear.in_channels :]
        return self._linear(base) + residual + F.conv_transpose2d(coded, self.detail, stride=STRIDE)

    def detail_of(self, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The detail coefficients of image x that the linear path of ``base`` (the latent's
        other channels, as the decoder will see them) misses."""
        return F.conv2d(x - self._linear(base), self.detail, stride=STRIDE)

    def _linear(self, base: torch.Tensor) -> torch.Tensor:
        """``self.linear(base)`` as one matrix product (each position's 32x32 patch) and an
        overlap-add (``fold``): the same sums, in 35 ms instead of 80 for a Kodak-sized image on
        two CPU threads, where the transposed convolution's kernel is this large."""
        b, c, h, w = base.shape
        patches = base.flatten(2).transpose(1, 2) @ self.linear.weight.reshape(c, -1)  # (B, h w, 3 x 32 x 32)
        full = F.fold(patches.transpose(1, 2), ((h + 1) * STRIDE, (w + 1) * STRIDE), 2 * STRIDE, stride=STRIDE)
        pad = STRIDE // 2
        return full[..., pad : pad + h * STRIDE, pad : pad + w * STRIDE] + self.linear.bias[:, None, None]

    @torch.no_grad()
    def initialise(self, basis: torch.Tensor, mean: torch.Tensor) -> None:
        """Rebuild each 16x16 block from its coefficients on ``basis``, adding back ``mean``."""
        _centre(self.linear.weight, basis)  # a transposed convolution's weight is (in, out, ...)
        self.linear.bias.copy_(mean)


def _zero(layer: nn.Module) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _centre(weight: torch.Tensor, basis: torch.Tensor) -> None:
    """A (latent, 3, 32, 32) kernel that is ``basis`` (latent, 3, 16, 16) in its centre."""
    weight.zero_()
    weight[:, :, STRIDE // 2 : STRIDE // 2 + STRIDE, STRIDE // 2 : STRIDE // 2 + STRIDE] = basis


def block_klt(images: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal axes of the 16x16 blocks of ``images`` (N, 3, H, W): the ``components``
    largest, as a basis (components, 3, 16, 16) with orthonormal rows, and the channel means (3,)."""
    mean = images.double().mean((0, 2, 3))
    blocks = F.unfold(images.double() - mean[:, None, None], STRIDE, stride=STRIDE)  # (N, 768, blocks)
    blocks = blocks.transpose(1, 2).reshape(-1, blocks.shape[1])
    if components > blocks.shape[1]:
        raise ValueError(f"a 16x16 RGB block has {blocks.shape[1]} coefficients, not {components}")
    _, axes = torch.linalg.eigh(blocks.T @ blocks)
    basis = axes.flip(1)[:, :components].T
    return basis.reshape(components, 3, STRIDE, STRIDE).float(), mean.float()


TRANSFORMS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "gdn": (Analysis, Synthesis),
    "lapped": (LappedAnalysis, LappedSynthesis),
}
"""Analysis and synthesis pairs by name (``ModelConfig.transform``)."""


TILE = 1024
"""Images larger than this (pixels per side) go through the transforms in tiles, so memory stays
bounded: a 48 MP photo needs a few hundred MB of activations instead of tens of GB."""
MARGIN = 64
"""Overlap in pixels on each side of a tile. It exceeds the receptive field of both transforms
(about 30 pixels for the analysis, 46 with the lifting step of detail channels; 2 latent
positions for the synthesis), so tiles see exactly
what the whole image would show them and stitched results have no seams."""


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: Fraction,
          tile: int, margin: int) -> torch.Tensor:
    """Apply a convolutional ``fn`` to overlapping tiles of x (B, C, H, W) and stitch the
    interiors. ``fn`` maps an (h, w) input to (h*scale, w*scale); tile and margin are in input
    units and multiples of 1/scale when scale < 1."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            part = fn(x[..., ya : min(y1 + margin, h), xa : min(x1 + margin, w)])
            if out is None:
                out = part.new_empty(*part.shape[:2], int(h * scale), int(w * scale))
            oy, ox = int((y0 - ya) * scale), int((x0 - xa) * scale)
            ty, tx = int((y1 - y0) * scale), int((x1 - x0) * scale)
            out[..., int(y0 * scale) : int(y1 * scale), int(x0 * scale) : int(x1 * scale)] = \
                part[..., oy : oy + ty, ox : ox + tx]
    return out


def analyse(analysis: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Image (B, 3, H, W), H and W multiples of STRIDE -> latent, in tiles if large."""
    return tiled(analysis, x, Fraction(1, STRIDE), TILE, MARGIN)


def synthesise(synthesis: nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Latent -> 8-bit image (B, 3, 16h, 16w) as uint8, in tiles if large; converting each tile
    to 8 bits as it is made keeps the float output of a large image out of memory."""
    def to_8bit(lat: torch.Tensor) -> torch.Tensor:
        return synthesis(lat).clamp_(0, 1).mul_(255).round_().to(torch.uint8)

    return tiled(to_8bit, latent, Fraction(STRIDE), TILE // STRIDE, MARGIN // STRIDE)
