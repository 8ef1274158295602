"""Residual vector quantizer (RVQ) with EMA codebooks, dead-code revival and quantizer dropout.

Stage s quantizes what stages 0..s-1 left over, so a prefix of the stages is a coarser code of
the same latent: one trained model serves every rate. The codebook recipe is SoundStream's
(k-means initialisation, EMA updates, replacement of unused codes by batch residuals); the
dropout is DAC's per-sample draw, so every prefix length is trained.

The stages work in a *coding space*: an affine map of the latent, z = project @ (y - mean), and
back, y = unproject @ z + mean (the identity unless set). Nearest-code search weighs every axis
of z alike, while the synthesis does not: on the vae's trained transforms, k-means RVQ on the
raw latent reached 27.3 dB at 12 stages on the held-out corners, and 31.7 dB in the space the
vae's finest level rounds in, where a unit error costs about the same on every axis
(``adopt_coding_space``; the rvq model card has the measurements).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..entropy import IndexEntropyModel
from . import BottleneckOutput, RateCost, register


def _distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance (N, K) from each row of x to each code."""
    return (x * x).sum(1, keepdim=True) - 2 * x @ codebook.t() + (codebook * codebook).sum(1)


def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return _distances(x, codebook).argmin(1)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Plain Lloyd k-means; empty clusters are re-seeded with random points."""
    centers = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    for _ in range(iters):
        idx = _nearest(x, centers)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centers).index_add_(0, idx, x)
        empty = counts == 0
        centers = sums / counts.clamp(min=1)[:, None]
        reseed = torch.randint(len(x), (int(empty.sum()),), generator=generator)
        centers[empty] = x[reseed]
    return centers


ENCODE_CHUNK = 1 << 15
"""Latent positions quantized at a time: the distance matrices of a 48 MP image would take
GBs (positions x codebook size floats) if made at once."""


@register("rvq")
class ResidualVQ(nn.Module):
    entropy_model = IndexEntropyModel

    def __init__(
        self,
        dim: int,
        stages: int,
        codebook_size: int,
        decay: float = 0.99,
        dead_threshold: float = 0.5,
        commitment: float = 0.1,
    ) -> None:
        super().__init__()
        self.dim, self.sections, self.levels, self.alphabet = dim, stages, stages, codebook_size
        self.decay, self.dead_threshold, self.commitment = decay, dead_threshold, commitment
        self.register_buffer("codebooks", torch.zeros(stages, codebook_size, dim))
        self.register_buffer("ema_count", torch.ones(stages, codebook_size))
        # each codebook is its EMA sum over its EMA count, so files store the count only (the
        # sum would double their size) and loading rebuilds the sum
        self.register_buffer("ema_sum", torch.zeros(stages, codebook_size, dim), persistent=False)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("project", torch.eye(dim))
        self.register_buffer("unproject", torch.eye(dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        """Files from before the coding space have none: theirs is the identity. Older files
        also store the EMA sum, which the codebooks and counts determine."""
        for name in ("mean", "project", "unproject"):
            state_dict.setdefault(prefix + name, getattr(self, name).detach().clone())
        state_dict.pop(prefix + "ema_sum", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        with torch.no_grad():
            self.ema_sum.copy_(self.codebooks * self.ema_count.clamp(min=1e-5)[..., None])

    @torch.no_grad()
    def adopt_coding_space(self, mean: torch.Tensor, project: torch.Tensor, unproject: torch.Tensor) -> None:
        """Quantize in z = project @ (y - mean), decode through y = unproject @ z + mean: before
        ``initialise``, with a map from the bottleneck whose transforms this one takes over."""
        self.mean.copy_(mean)
        self.project.copy_(project)
        self.unproject.copy_(unproject)

    def _to_space(self, flat: torch.Tensor) -> torch.Tensor:
        return (flat - self.mean) @ self.project.t()

    def _from_space(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.unproject.t() + self.mean

    # -- training -----------------------------------------------------------------------
    @torch.no_grad()
    def initialise(self, latents: torch.Tensor, seed: int = 0, iters: int = 20) -> None:
        """k-means each stage on the residuals the earlier (already initialised) stages leave."""
        gen = torch.Generator().manual_seed(seed)
        residual = self._to_space(latents.reshape(-1, self.dim).float())
        for s in range(self.sections):
            centers = kmeans(residual, self.alphabet, iters, gen)
            self.codebooks[s] = centers
            self.ema_sum[s] = centers
            self.ema_count[s] = 1.0
            residual -= centers[_nearest(residual, centers)]

    def forward(self, latent: torch.Tensor, level: torch.Tensor | None) -> BottleneckOutput:
        b, _, h, w = latent.shape
        flat = self._to_space(rearrange(latent, "b c h w -> (b h w) c"))
        residual = flat.detach().clone()
        partial = torch.zeros_like(residual)
        per_stage = []  # partial reconstruction after each stage
        indices = []
        for s in range(self.sections):
            idx = _nearest(residual, self.codebooks[s])
            code = self.codebooks[s][idx]
            indices.append(idx)
            if self.training:
                self._ema_update(s, residual, idx)
            residual = residual - code
            partial = partial + code
            per_stage.append(partial)
        stacked = torch.stack(per_stage)  # (S, N, C)
        if level is None:
            level = torch.full((b,), self.sections, device=latent.device)
        use = (level.repeat_interleave(h * w) - 1).clamp(0, self.sections - 1)
        quant = stacked[use, torch.arange(len(use), device=latent.device)]
        commit = F.mse_loss(flat, quant) / flat.detach().square().mean().clamp(min=1e-6)
        out = self._from_space(flat + (quant - flat).detach())  # straight-through gradient to the encoder
        metrics = {f"perplexity/{s}": _perplexity(i, self.alphabet) for s, i in enumerate(indices)}
        return BottleneckOutput(
            rearrange(out, "(b h w) c -> b c h w", b=b, h=h, w=w), self.commitment * commit, metrics
        )

    @torch.no_grad()
    def _ema_update(self, s: int, residual: torch.Tensor, idx: torch.Tensor) -> None:
        counts = torch.bincount(idx, minlength=self.alphabet).to(residual.dtype)
        sums = torch.zeros_like(self.ema_sum[s]).index_add_(0, idx, residual)
        self.ema_count[s].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum[s].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codebooks[s] = self.ema_sum[s] / self.ema_count[s].clamp(min=1e-5)[:, None]
        dead = self.ema_count[s] < self.dead_threshold
        if dead.any():
            pick = torch.randint(len(residual), (int(dead.sum()),), device=residual.device)
            self.codebooks[s][dead] = residual[pick]
            self.ema_sum[s][dead] = residual[pick]
            self.ema_count[s][dead] = 1.0

    # -- coding -------------------------------------------------------------------------
    def bit_value(self) -> torch.Tensor:
        """(stages,) what a bit spent at each stage is worth, in latent squared error: the mean
        code energy over log2 K of that stage and every later one. Stage s's choice is kept by
        every finer quality, so its bits are priced at the finer stages' going rate too; and
        pricing each stage in its own units lets one dimensionless bias fit all of them,
        although code energy falls about 250x from the first stage to the last (a bias in
        absolute units is lost in the first stages' distances or dominates the last ones').
        No quality level enters, so a file's first stages are the same symbols at every
        quality and it can still be truncated. Held-out BD-rates of the choices tried are in
        the rvq model card."""
        own = self.codebooks.square().sum(2).mean(1) / math.log2(self.alphabet)
        later = torch.arange(self.sections, 0, -1, dtype=own.dtype)
        return own.flip(0).cumsum(0).flip(0) / later

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, level: int, cost: RateCost | None = None) -> np.ndarray:
        """Level = stages; the first stages of a higher level are the same symbols."""
        b, _, h, w = latent.shape
        flat = self._to_space(rearrange(latent, "b c h w -> (b h w) c").float())
        value = self.bit_value() if cost is not None else None
        out = np.empty((level, b * h * w), dtype=np.int32)
        for start in range(0, len(flat), ENCODE_CHUNK):  # positions are independent
            residual = flat[start : start + ENCODE_CHUNK].clone()
            idx = None
            for s in range(level):
                dist = _distances(residual, self.codebooks[s])
                if cost is not None:  # entropy-constrained: a likely code may win over a nearer one
                    dist += cost(s, idx) * value[s]
                idx = dist.argmin(1)
                residual -= self.codebooks[s][idx]
                out[s, start : start + len(idx)] = idx.numpy()
        return out.reshape(level, b, h, w)

    @torch.no_grad()
    def decode(self, symbols: np.ndarray, level: int | None = None) -> torch.Tensor:
        n, b, h, w = symbols.shape
        idx = torch.from_numpy(symbols.astype(np.int64)).reshape(n, -1)
        latent = torch.zeros(idx.shape[1], self.dim)
        for s in range(n):  # fixed summation order: the same latent for any batch size
            latent += self.codebooks[s][idx[s]]
        return rearrange(self._from_space(latent), "(b h w) c -> b c h w", b=b, h=h, w=w)

    @torch.no_grad()
    def unquantized(self, latent: torch.Tensor) -> torch.Tensor:
        """The latent through the coding space and back with no codes: the ceiling's path."""
        flat = rearrange(latent.float(), "b c h w -> (b h w) c")
        b, _, h, w = latent.shape
        return rearrange(self._from_space(self._to_space(flat)), "(b h w) c -> b c h w", b=b, h=h, w=w)

    def symbol_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (h, w)

    def fit_entropy(self, symbols, config) -> IndexEntropyModel:
        """Count the training symbols, with the previous stage's index as context."""
        flat = np.concatenate([s.reshape(s.shape[0], -1) for s in symbols(self.levels)], axis=1)
        return IndexEntropyModel.fit(flat, self.alphabet, config.context_groups)


def _perplexity(idx: torch.Tensor, k: int) -> float:
    p = torch.bincount(idx, minlength=k).float()
    p = p / p.sum()
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
