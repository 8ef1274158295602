"""Residual quantizer with nested lattice codebooks: every stage halves the step.

Stage p quantizes what the stages before left with the integer lattice at step top / 2**p on
every coefficient of the coding space (``CodingSpace``), in sign-magnitude form (a deadzone
quantizer: magnitudes round down, so the zero cell is two steps wide). Because the step halves,
each stage's cells split the cells of the stage before exactly: stage p only says, per
coefficient, which half of its cell the value is in, or whether a coefficient still at 0
leaves it and with which sign. These are the bit-planes of JPEG 2000 and SPIHT, applied to a
learned transform's latent.

Why nested cells: a residual quantizer whose stages do not nest (the ``rvq`` bottleneck's ECVQ
codebooks) pays at every stage for where the earlier stages happened to leave the residual; on
the held-out views it spent 34-61% more bits than ``vae``'s single rounding for the same
pictures. With nested cells the stages together cost what coding the finest stage's indices
directly would (the chain rule), and the entropy model (``PlaneTables``) prices each decision
from the magnitudes already decoded around it. Every prefix of a file is a coarser code of the
same image, as with any residual quantizer.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from ..entropy import PlaneTables
from . import BottleneckOutput, RateCost, register
from .space import CodingSpace


@register("lattice")
class LatticeRVQ(CodingSpace):
    """``planes`` nested planes from step ``top_step`` (coding-space units) down by 2 each, in
    three passes each: the first ``head`` planes in the first section, then one pass per
    section (``PlaneTables.passes``); level = sections decoded. A magnitude of 2 x top_step or
    more is coded as just under it (the shipped 1024 steps of the finest vae level are over
    twice the largest coefficient measured: 444, the DC of a white image); a significant
    coefficient is reconstructed at ``offset`` of the way through its cell."""

    entropy_model = PlaneTables
    balanced = True  # one step for every axis: the axes must cost alike

    def __init__(self, dim: int, planes: int = 12, head: int = 6, top_step: float = 512.0,
                 offset: float = 0.5) -> None:
        super().__init__(dim)
        self.planes, self.head, self.top_step, self.offset = planes, head, top_step, offset
        self.sections = self.levels = 1 + 3 * (planes - head)

    def initialise(self, latents: torch.Tensor, seed: int = 0) -> None:
        """Nothing to fit: the lattices are fixed, and the space comes from ``adopt_coding_space``."""

    def _passes(self, level: int) -> list[tuple[int, int, int]]:
        return PlaneTables.passes(self.planes, self.head, level)

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, level: int, cost: RateCost | None = None) -> np.ndarray:
        """Latent (B, C, h, w) -> decisions (passes, B, C, h, w) int8: 0/1/2 (stays 0, becomes
        positive, becomes negative) in a significance pass, the bit in a refinement pass, 0
        where a pass codes nothing (``PlaneTables.members``). The steps are the top one over
        powers of two, so m_p = floor(|z| / step_p) is the finest plane's index shifted right:
        exactly 2 m_{p-1} or one more, the planes nest. Each decision follows from the value,
        so there is nothing for a rate ``cost`` to bias (the plane tables price none)."""
        b, _, h, w = latent.shape
        flat = self._to_space(rearrange(latent.float(), "b c h w -> (b h w) c"))
        z = rearrange(flat.double().numpy(), "(b h w) c -> b c h w", b=b, h=h, w=w)
        sign = np.where(z < 0, 2, 1).astype(np.int8)  # the symbol of becoming significant
        passes = self._passes(level)
        finest = passes[-1][1]
        magnitude = np.minimum(np.abs(z), np.nextafter(2 * self.top_step, 0))
        finest_m = np.floor(magnitude / (self.top_step / 2**finest)).astype(np.int32)  # < 2^(planes + 1)
        out = np.zeros((len(passes), *z.shape), dtype=np.int8)
        before = np.zeros(z.shape, dtype=np.int32)  # magnitudes of the finished planes
        for i, (_, plane, kind) in enumerate(passes):
            if kind == PlaneTables.NEAR:
                m = finest_m >> (finest - plane)  # floor(|z| / step) at this plane, exactly
                boxes = PlaneTables.boxes(before)
            if kind == PlaneTables.REFINE:
                out[i] = (m - 2 * before) * (before > 0)
                continue
            out[i] = sign * (PlaneTables.members(kind, before, boxes) & (m > 0))
            if kind == PlaneTables.FAR:
                before = m
        return out

    @torch.no_grad()
    def decode(self, symbols: np.ndarray, level: int) -> torch.Tensor:
        """Decisions (passes, B, C, h, w) -> latent: each significant coefficient at ``offset``
        through the cell its decisions so far leave it in."""
        shape = symbols.shape[1:]
        m = np.zeros(shape, dtype=np.int64)  # magnitude index, at the plane in ``at``
        at = np.zeros(shape, dtype=np.int64)
        negative = np.zeros(shape, dtype=bool)
        for s, (_, plane, kind) in zip(symbols, self._passes(level)):
            if kind == PlaneTables.REFINE:
                old = (m > 0) & (at == plane - 1)
                m = np.where(old, 2 * m + s, m)
                at = np.where(old, plane, at)
            else:
                new = (m == 0) & (s > 0)
                m = np.where(new, 1, m)
                at = np.where(new, plane, at)
                negative |= new & (s == 2)
        value = np.where(m > 0, (m + self.offset) * self.top_step / 2.0**at, 0.0)
        z = torch.from_numpy(np.where(negative, -value, value)).float()
        b, _, h, w = z.shape
        flat = self._from_space(rearrange(z, "b c h w -> (b h w) c"))
        return rearrange(flat, "(b h w) c -> b c h w", b=b, h=h, w=w)

    def forward(self, latent: torch.Tensor, level: torch.Tensor | None) -> BottleneckOutput:
        """Each sample quantized at its level (the finest by default), straight through to the
        encoder: for training the synthesis on what files decode to (``--decoder-only``)."""
        levels = [self.levels] * len(latent) if level is None else level.tolist()
        quant = torch.cat([self.decode(self.encode(x[None], n), n) for x, n in zip(latent.detach().cpu(), levels)])
        quant = quant.to(latent.device)
        return BottleneckOutput(latent + (quant - latent).detach(), torch.zeros((), device=latent.device))

    def symbol_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (self.dim, h, w)

    def fit_entropy(self, symbols, config) -> PlaneTables:
        """Tables from the training images' decisions at the finest level (every coarser level's
        are a prefix of them)."""
        return PlaneTables.fit([s[:, 0] for s in symbols(self.levels)], self.head)
