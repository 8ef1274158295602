"""Variational autoencoder bottleneck: a scalar-quantized latent under a learned factorized prior.

This is Balle et al.'s variational image compression (2017, 2018): in training the posterior is
a unit box around the encoder's output (additive uniform noise) and the rate term is the
prior's -log2 likelihood of the noisy latent; at coding time the latent is rounded and coded
against integer tables of the same prior. One model serves several rate-distortion trade-offs
through gain vectors (Cui et al., 2021): level l scales the latent channel-wise by ``gain[l]``
before rounding and by ``inverse_gain[l]`` after, and has its own prior, so each level is a
separate point trained with its own lambda, sharing the transforms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..entropy import FactorizedTables
from . import BottleneckOutput, RateCost, register
from .prior import FactorizedPrior

LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483)
"""Distortion weights of the levels (loss = lambda * 255^2 * MSE + bpp): CompressAI's ladder."""

MAX_ALPHABET = 1024
"""Widest integer table per channel; a latent value beyond it is clamped to its end."""


@register("vae")
class GainedVAE(nn.Module):
    sections = 1
    entropy_model = FactorizedTables

    def __init__(self, dim: int, lambdas: tuple[float, ...] | list[float] = LAMBDAS) -> None:
        super().__init__()
        self.dim, self.lambdas, self.levels = dim, tuple(lambdas), len(lambdas)
        self.gain = nn.Parameter(torch.zeros(self.levels, dim))  # log scale, encoder side
        self.inverse_gain = nn.Parameter(torch.zeros(self.levels, dim))  # log scale, decoder side
        self.prior = FactorizedPrior(self.levels * dim)

    @torch.no_grad()
    def initialise(self, latents: torch.Tensor, seed: int = 0) -> None:
        """Gains that give level l's rounded latent a spread of about 0.5 x 1.7^(l-1)
        quantization steps per channel, from latents (N, C) of training crops; training then
        moves each level to its lambda."""
        std = latents.float().std(0).clamp(min=1e-6)
        spread = 0.5 * 1.7 ** torch.arange(self.levels, dtype=torch.float32)
        self.gain.copy_(torch.log(spread[:, None] / std))
        self.inverse_gain.copy_(-self.gain)

    def _rows(self, level: torch.Tensor) -> torch.Tensor:
        """Prior rows (B, C) of each sample's level (1-based)."""
        return (level[:, None] - 1) * self.dim + torch.arange(self.dim, device=level.device)

    def _levels(self, latent: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        """Each sample's level (B,), the finest where none is given."""
        return torch.full((len(latent),), self.levels, device=latent.device) if level is None else level

    def forward(self, latent: torch.Tensor, level: torch.Tensor | None) -> BottleneckOutput:
        level = self._levels(latent, level)
        gain = self.gain[level - 1].exp()[:, :, None, None]
        scaled = latent * gain
        noisy = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5)
        bits = -torch.log2(self.prior.likelihood(noisy.flatten(2), self._rows(level))).sum((1, 2))
        rounded = scaled + (torch.round(scaled) - scaled).detach()  # the decoder sees real rounding
        inverse = self.inverse_gain[level - 1].exp()[:, :, None, None]
        penalty, metrics = self.penalty(scaled)
        metrics["bits_per_latent"] = float(bits.detach().mean()) / scaled[0].numel()
        return BottleneckOutput(rounded * inverse, penalty, metrics, bits)

    def penalty(self, scaled: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Extra training loss on the scaled latent (none here; see the sparse bottleneck)."""
        return torch.zeros((), device=scaled.device), {}

    def rate_weight(self, level: torch.Tensor) -> torch.Tensor:
        """lambda of each sample's level, for the training loss."""
        return torch.tensor(self.lambdas, device=level.device)[level - 1]

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, level: int, cost: RateCost | None = None) -> np.ndarray:
        """Latent (B, C, h, w) -> rounded values (1, B, C, h, w) at ``level``."""
        scaled = latent.float() * self.gain[level - 1].exp()[:, None, None]
        return torch.round(scaled).to(torch.int32).numpy()[None]

    @torch.no_grad()
    def decode(self, symbols: np.ndarray, level: int) -> torch.Tensor:
        values = torch.from_numpy(symbols[0].astype(np.float32))
        return values * self.inverse_gain[level - 1].exp()[:, None, None]

    def symbol_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (self.dim, h, w)

    def fit_entropy(self, symbols, config) -> FactorizedTables:
        """The prior's own tables; the training symbols are not needed."""
        offsets, counts = self.prior.tables(MAX_ALPHABET)
        return FactorizedTables(counts.reshape(self.levels, self.dim, -1).numpy(),
                                offsets.reshape(self.levels, self.dim).numpy())
