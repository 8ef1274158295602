"""A learned factorized density for scalar latents, and the integer tables it is coded with.

The density is Balle et al.'s non-parametric one (2018, appendix 6.1): for each row (one
channel, at one quality level) a small monotone network maps x to the logit of its CDF, so any
unimodal or skewed shape can be learned. Training sees the density convolved with a unit box,
P(x) = c(x + 1/2) - c(x - 1/2), which is exactly the probability of the integer that x rounds to
at coding time. For coding, that probability is evaluated once, at export, on an integer grid
and stored as integer counts: the decoder never runs this network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TAIL = 2.0**-20
"""Probability mass a table may leave out on each side; values beyond are clamped to its ends."""


class FactorizedPrior(nn.Module):
    def __init__(self, rows: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[k + 1]))  # softplus^-1: initial spread init_scale
            self.matrices.append(nn.Parameter(torch.full((rows, dims[k + 1], dims[k]), init)))
            self.biases.append(nn.Parameter(torch.rand(rows, dims[k + 1], 1) - 0.5))
            if k < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(rows, dims[k + 1], 1)))

    def _logits(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logit of the CDF at x (..., 1, N), for density ``rows`` (...)."""
        for k, matrix in enumerate(self.matrices):
            x = F.softplus(matrix[rows]) @ x + self.biases[k][rows]
            if k < len(self.factors):
                x = x + torch.tanh(self.factors[k][rows]) * torch.tanh(x)
        return x

    def _mass(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """P(round(v)) for values (..., N) under density ``rows`` (...), exactly."""
        x = values.unsqueeze(-2)
        lower, upper = self._logits(x - 0.5, rows), self._logits(x + 0.5, rows)
        flip = -torch.sign(lower + upper).detach()  # evaluate in the tail where sigmoid is exact
        return (torch.sigmoid(flip * upper) - torch.sigmoid(flip * lower)).abs().squeeze(-2)

    def likelihood(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """P(round(v)), floored at 1e-9 so that training's log-rate stays finite."""
        return self._mass(values, rows).clamp(min=1e-9)

    @torch.no_grad()
    def tables(self, max_alphabet: int, reach: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer tables of every row: ``offsets`` (rows,) int32, the value of each table's first
        symbol, ``counts`` (rows, A) int32, proportional to P(value), and ``widths`` (rows,), how
        many of a row's counts are its table: the range holding all but 2 x TAIL of its mass, at
        most ``max_alphabet`` (centred on the median where wider) and at least 2. A is the largest width."""
        rows = torch.arange(len(self.matrices[0]))
        grid = torch.arange(-reach, reach + 1, dtype=torch.float64)
        # The exact mass, not the floored likelihood: 1e-9 on each of 8193 values would put more
        # than TAIL in every tail and make every table 4096 wide.
        pmf = self._mass(grid.float().expand(len(rows), -1).contiguous(), rows).double()
        pmf = pmf / pmf.sum(1, keepdim=True)
        cdf = pmf.cumsum(1)
        lo = (cdf < TAIL).sum(1)
        hi = (cdf < 1 - TAIL).sum(1)
        widths = (hi - lo + 1).clamp(min=2, max=max_alphabet)  # the coder needs two symbols
        width = int(widths.max())
        median = (cdf < 0.5).sum(1)
        lo = torch.where(hi - lo + 1 > widths, median - widths // 2, lo).clamp(min=0)
        lo = torch.minimum(lo, len(grid) - widths)
        index = (lo[:, None] + torch.arange(width)).clamp(max=len(grid) - 1)
        counts = torch.floor(pmf.gather(1, index) * (1 << 24)).to(torch.int32)
        counts[torch.arange(width) >= widths[:, None]] = 0  # beyond a row's own table
        return grid[lo].to(torch.int32), counts, widths.to(torch.int32)
