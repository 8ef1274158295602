"""Variational autoencoder bottleneck: a scalar-quantized latent under a learned factorized prior.

This is Balle et al.'s variational image compression (2017, 2018): in training the posterior is
a unit box around the encoder's output (additive uniform noise) and the rate term is the
prior's -log2 likelihood of the noisy latent; at coding time the latent is rounded and coded
against integer tables of the same prior. One model serves several rate-distortion trade-offs
through gain vectors (Cui et al., 2021): level l scales the latent channel-wise by ``gain[l]``
before rounding and by ``inverse_gain[l]`` after, and has its own prior, so each level is a
separate point trained with its own lambda, sharing the transforms.

Before the gains, the latent is centred and rotated onto its principal axes (a learned C x C
map, initialised with the KLT of training latents; the decoder side has its own, initialised
with the inverse). Scalar quantization wastes bits on correlated channels and rounds away
large channel means; with transforms trained for another bottleneck (the RVQ's), that
initialisation alone cut the ideal rate at equal PSNR by 40% or more on held-out images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..entropy import ContextTables, FactorizedTables
from . import BottleneckOutput, RateCost, register
from .prior import FactorizedPrior

LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483)
"""Distortion weights of the levels (loss = lambda * 255^2 * MSE + bpp): CompressAI's ladder."""

PRIOR_FIT_SAMPLES = 2048
"""Latent positions the prior is fitted to at initialisation."""

BIT_VALUE = 2 * math.log(2) / 12
"""What a bit is worth, in squared quantization steps, for rate-biased rounding: the slope of
a uniform quantizer's distortion-rate curve at high rate (distortion 1/12 of a step squared,
falling by 2 ln 2 of itself per bit). Training with one lambda equalises that slope across
channels, so one price serves all, and the rate bias is dimensionless, as the RVQ's."""

MAX_ALPHABET = 4096
"""Widest integer table per channel; a latent value beyond it is clamped to its end. Each
channel's table is as wide as its own range (FactorizedTables.widths): at 1024 for all, the
lapped transform's DC channels were clipped at the two finest levels."""


@register("vae")
class GainedVAE(nn.Module):
    sections = 1
    entropy_model = ContextTables
    lr_scale = ("gain", "inverse_gain", "prior")
    """Parameters trained with a larger learning rate (see train.BOTTLENECK_LR_SCALE)."""

    def __init__(self, dim: int, lambdas: tuple[float, ...] | list[float] = LAMBDAS) -> None:
        super().__init__()
        self.dim, self.lambdas, self.levels = dim, tuple(lambdas), len(lambdas)
        self.mean = nn.Parameter(torch.zeros(dim))
        self.rotation = nn.Parameter(torch.eye(dim))  # encoder: z = rotation @ (y - mean)
        self.unrotation = nn.Parameter(torch.eye(dim))  # decoder: y = unrotation @ z + mean
        self.gain = nn.Parameter(torch.zeros(self.levels, dim))  # log scale, encoder side
        self.inverse_gain = nn.Parameter(torch.zeros(self.levels, dim))  # log scale, decoder side
        self.prior = FactorizedPrior(self.levels * dim)

    @torch.no_grad()
    def initialise(self, latents: torch.Tensor, seed: int = 0) -> None:
        """From latents (N, C) of training crops: their mean, their principal axes, and one
        quantization step per level for all channels (uniform steps are what high-rate theory
        says is optimal after a KLT), from 4 x the latent's RMS at level 1 down by 0.6 per
        level; training then moves each level to its lambda."""
        mean, rotation, log_gain = self._klt(latents)
        self.mean.copy_(mean)
        self.rotation.copy_(rotation)
        self.unrotation.copy_(rotation.T)
        self.gain.copy_(log_gain[:, None].expand(self.levels, self.dim))
        self.inverse_gain.copy_(-self.gain)
        self._fit_prior(latents[torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))[:PRIOR_FIT_SAMPLES]])

    @torch.no_grad()
    def grow(self, old: GainedVAE, latents: torch.Tensor, seed: int = 0) -> None:
        """Become ``old`` with more channels: its channels keep their mean, rotation, gains and
        densities, so they are coded exactly as before; the new ones (the last of latents (N,
        dim) from the grown analysis) are initialised as ``initialise`` would, block by block.
        The prior is then refitted to all channels from there."""
        c = old.dim
        mean, rotation, log_gain = self._klt(latents[:, c:])
        self.mean.copy_(torch.cat([old.mean, mean]))
        self.rotation.zero_()
        self.unrotation.zero_()
        self.rotation[:c, :c], self.unrotation[:c, :c] = old.rotation, old.unrotation
        self.rotation[c:, c:], self.unrotation[c:, c:] = rotation, rotation.T
        new = log_gain[:, None].expand(self.levels, self.dim - c)
        self.gain.copy_(torch.cat([old.gain, new], 1))
        self.inverse_gain.copy_(torch.cat([old.inverse_gain, -new], 1))
        for mine, theirs in zip(self.prior.parameters(), old.prior.parameters(), strict=True):
            mine.view(self.levels, self.dim, *mine.shape[1:])[:, :c] = theirs.view(self.levels, c, *theirs.shape[1:])
        self._fit_prior(latents[torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))[:2 * PRIOR_FIT_SAMPLES]])

    @torch.no_grad()
    def adopt_levels(self, old: GainedVAE, latents: torch.Tensor, seed: int = 0) -> None:
        """Become ``old`` with another lambda ladder (say, lower rates below its lowest level):
        the mean and rotations are old's, a lambda old has keeps its gains and densities, so it
        codes exactly as before, and a new one gets gains interpolated per channel linearly in
        log lambda between old's two nearest levels (extrapolated beyond its ends; high-rate
        theory makes the log step linear in log lambda) and densities fitted to ``latents``."""
        if old.dim != self.dim:
            raise ValueError(f"a latent of {old.dim} channels cannot become one of {self.dim}")
        self.mean.copy_(old.mean)
        self.rotation.copy_(old.rotation)
        self.unrotation.copy_(old.unrotation)
        known = torch.tensor(old.lambdas, dtype=torch.float64).log()
        new_levels = []
        for level, lam in enumerate(self.lambdas):
            if lam in old.lambdas:
                source = old.lambdas.index(lam)
                self.gain[level], self.inverse_gain[level] = old.gain[source], old.inverse_gain[source]
                for mine, theirs in zip(self.prior.parameters(), old.prior.parameters(), strict=True):
                    mine[level * self.dim : (level + 1) * self.dim] = theirs[source * self.dim : (source + 1) * self.dim]
                continue
            a = int(torch.searchsorted(known, torch.tensor(lam, dtype=torch.float64).log()).clamp(1, len(known) - 1)) - 1
            t = float((np.log(lam) - known[a]) / (known[a + 1] - known[a]))
            self.gain[level] = old.gain[a] + t * (old.gain[a + 1] - old.gain[a])
            self.inverse_gain[level] = old.inverse_gain[a] + t * (old.inverse_gain[a + 1] - old.inverse_gain[a])
            new_levels.append(level)
        if new_levels:
            picked = latents[torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))[:PRIOR_FIT_SAMPLES]]
            self._fit_prior(picked, levels=new_levels)

    def _klt(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, principal axes (rows, largest variance first) and log gain per level of latents
        (N, C): one quantization step for all channels, 4 x their RMS at level 1, x0.6 per level."""
        y = latents.double()
        mean = y.mean(0)
        variances, axes = torch.linalg.eigh(torch.cov((y - mean).T))
        rms = variances.clamp(min=0).mean().sqrt().clamp(min=1e-6)
        step = rms * 4 * 0.6 ** torch.arange(self.levels, dtype=torch.float64)
        return mean.float(), axes.flip(1).T.float(), -torch.log(step).float()

    @torch.enable_grad()
    def _fit_prior(self, latents: torch.Tensor, steps: int = 300, levels: list[int] | None = None) -> None:
        """Fit the prior alone to these latents at these levels (0-based; all by default) by
        Adam on their noisy -log2 likelihood, so training starts with a calibrated rate term,
        not a blanket one. Other levels' densities get no gradient, so Adam leaves them be."""
        levels = list(range(self.levels)) if levels is None else levels
        with torch.no_grad():
            z = self._rotate(latents.float()[:, :, None, None])[:, :, 0, 0]  # (N, C)
            scaled = z.T[None] * self.gain[levels].exp()[:, :, None]  # (levels, C, N)
        rows = torch.arange(self.levels * self.dim).reshape(self.levels, self.dim)[levels]
        opt = torch.optim.Adam(self.prior.parameters(), lr=1e-2)
        for _ in range(steps):
            noisy = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5)
            loss = -torch.log2(self.prior.likelihood(noisy, rows)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def coding_space(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, project, unproject) of the space the finest level rounds in: z = project @
        (y - mean) and y = unproject @ z + mean. Training made a unit step there cost about the
        same distortion on every axis, the metric a vector quantizer needs (ResidualVQ)."""
        level = self.levels - 1
        return (self.mean.clone(), self.gain[level].exp()[:, None] * self.rotation,
                self.unrotation * self.inverse_gain[level].exp())

    @torch.no_grad()
    def level_steps(self) -> torch.Tensor:
        """(levels,) each level's rounding step in ``coding_space`` units, coarsest first (1 at
        the finest level): the geometric mean over channels of the finest gain over the
        level's, each channel weighted by the bits its prior gives it there. The channels that
        carry the rate set the level's rate-distortion slope; a plain median is set by the
        many channels a coarse level rounds to 0 whatever their step, and was 2.3x too coarse
        at level 1 of the shipped vae (45 steps against 19)."""
        tables = self.prior_tables()
        p = tables.counts.astype(np.float64)
        p = p / p.sum(-1, keepdims=True)
        bits = torch.from_numpy(-(p * np.log2(np.where(p > 0, p, 1.0))).sum(-1))  # (levels, C)
        log_steps = (self.gain[-1] - self.gain).double()
        return ((bits * log_steps).sum(1) / bits.sum(1).clamp(min=1e-9)).exp().float()

    def _rotate(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dc,bchw->bdhw", self.rotation, latent - self.mean[:, None, None])

    def _unrotate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("cd,bdhw->bchw", self.unrotation, z) + self.mean[:, None, None]

    def _rows(self, level: torch.Tensor) -> torch.Tensor:
        """Prior rows (B, C) of each sample's level (1-based)."""
        return (level[:, None] - 1) * self.dim + torch.arange(self.dim, device=level.device)

    def _levels(self, latent: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        """Each sample's level (B,), the finest where none is given."""
        return torch.full((len(latent),), self.levels, device=latent.device) if level is None else level

    def forward(self, latent: torch.Tensor, level: torch.Tensor | None) -> BottleneckOutput:
        level = self._levels(latent, level)
        gain = self.gain[level - 1].exp()[:, :, None, None]
        scaled = self._rotate(latent) * gain
        noisy = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5)
        bits = -torch.log2(self.prior.likelihood(noisy.flatten(2), self._rows(level))).sum((1, 2))
        rounded = scaled + (torch.round(scaled) - scaled).detach()  # the decoder sees real rounding
        inverse = self.inverse_gain[level - 1].exp()[:, :, None, None]
        penalty, metrics = self.penalty(scaled)
        metrics["bits_per_latent"] = float(bits.detach().mean()) / scaled[0].numel()
        return BottleneckOutput(self._unrotate(rounded * inverse), penalty, metrics, bits)

    def penalty(self, scaled: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Extra training loss on the scaled latent (none here; see the sparse bottleneck)."""
        return torch.zeros((), device=scaled.device), {}

    def rate_weight(self, level: torch.Tensor) -> torch.Tensor:
        """lambda of each sample's level, for the training loss."""
        return torch.tensor(self.lambdas, device=level.device)[level - 1]

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, level: int, cost: RateCost | None = None) -> np.ndarray:
        """Latent (B, C, h, w) -> rounded values (1, B, C, h, w) at ``level``. With a cost,
        each value is whichever of the two integers around it has the smaller squared distance
        plus cost x BIT_VALUE (rate-distortion optimised quantization): a rare value is not
        worth its bits when the common one beside it is nearly as near."""
        scaled = self._rotate(latent.float()) * self.gain[level - 1].exp()[:, None, None]
        if cost is None:
            return torch.round(scaled).to(torch.int32).numpy()[None]
        low = torch.floor(scaled)
        high = low + 1
        up = (high - scaled) ** 2 + cost(0, high) * BIT_VALUE < (scaled - low) ** 2 + cost(0, low) * BIT_VALUE
        return torch.where(up, high, low).to(torch.int32).numpy()[None]

    @torch.no_grad()
    def decode(self, symbols: np.ndarray, level: int) -> torch.Tensor:
        values = torch.from_numpy(symbols[0].astype(np.float32))
        return self._unrotate(values * self.inverse_gain[level - 1].exp()[:, None, None])

    @torch.no_grad()
    def unquantized(self, latent: torch.Tensor) -> torch.Tensor:
        """The latent through the finest level's maps with no rounding: the ceiling's path."""
        level = self.levels - 1
        z = self._rotate(latent.float()) * (self.gain[level] + self.inverse_gain[level]).exp()[:, None, None]
        return self._unrotate(z)

    def symbol_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (self.dim, h, w)

    def fit_entropy(self, symbols, config) -> ContextTables:
        """The prior's own tables, plus context tables counted on the training symbols."""
        return ContextTables.fit(self.prior_tables(), [symbols(level) for level in range(1, self.levels + 1)])

    def prior_tables(self) -> FactorizedTables:
        """The prior's exact mass on each integer, as integer tables (no training symbols)."""
        offsets, counts, widths = self.prior.tables(MAX_ALPHABET)
        return FactorizedTables(counts.reshape(self.levels, self.dim, -1).numpy(),
                                offsets.reshape(self.levels, self.dim).numpy(),
                                widths.reshape(self.levels, self.dim).numpy())
