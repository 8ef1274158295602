"""Sparse autoencoder bottleneck: the VAE's scalar latent with an L1 sparsity penalty on the
code, coded as a significance map plus values.

The L1 penalty (the sparse autoencoder's classic one) pushes rounded latent values to exactly
zero beyond what the rate term alone asks (on Kodak: one to two points more zeros than the VAE). A factorized prior codes
each zero at its own cost, blind to where the zeros are; the significance map codes "is it
zero?" with a context of the two previous channels at the same position, where zeros cluster,
and then only the non-zero values (SparseTables in entropy.py).
"""

from __future__ import annotations

import torch

from ..entropy import SparseTables
from . import register
from .vae import LAMBDAS, GainedVAE


@register("sparse")
class SparseVAE(GainedVAE):
    entropy_model = SparseTables

    def __init__(self, dim: int, lambdas: tuple[float, ...] | list[float] = LAMBDAS, sparsity: float = 0.05) -> None:
        super().__init__(dim, lambdas)
        self.sparsity = sparsity

    def penalty(self, scaled: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """sparsity x mean |value|, in quantization steps (the unit the code is rounded in)."""
        zeros = float((torch.round(scaled.detach()) == 0).float().mean())
        return self.sparsity * scaled.abs().mean(), {"zeros": zeros}

    def fit_entropy(self, symbols, config) -> SparseTables:
        """The prior's value tables, plus significance tables counted on training symbols."""
        return SparseTables.fit(self.prior_tables(), [symbols(level) for level in range(1, self.levels + 1)])
