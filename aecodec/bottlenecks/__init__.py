"""Bottlenecks: what sits between the analysis and synthesis transforms.

A bottleneck turns a float latent into integer symbols at one of its rate *levels*, in
coarse-to-fine *sections* (the RVQ: one section per stage, level = stages; the VAE: one section,
level = gain vector), and back; its entropy model codes them against integer tables. Every bottleneck follows the same small
protocol so the container, CLI, API and benchmarks need no change for a new variant: write one
module, decorate its class with ``@register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


@dataclass
class BottleneckOutput:
    """Result of the training-time forward pass."""

    latent_hat: torch.Tensor
    loss: torch.Tensor
    """Auxiliary loss of the bottleneck (commitment term), already weighted."""
    metrics: dict[str, float] = field(default_factory=dict)
    bits: torch.Tensor | None = None
    """Estimated code length (B,) of each sample, for bottlenecks trained with a rate term;
    None where the level alone fixes the rate (the RVQ)."""


RateCost = Callable[[int, "torch.Tensor | None"], torch.Tensor]
"""``cost(section, symbols)`` -> a dimensionless bias times code lengths in bits under the
model's tables, added to each choice's distortion when encoding section ``section``
(entropy-constrained quantization; the bottleneck turns bits into its own distortion units).
Its entropy model says what ``symbols`` are: for the RVQ's index tables, the flat symbols of the
section before (groups, N) at the same N positions (None for the first), and the penalty is
(groups, N, alphabet), or one (groups, 1, alphabet) row for all positions, over every code;
for a factorized prior (the VAE's), candidate values (B, C, h, w), and the penalty is one per
value."""


class EntropyModel(Protocol):
    """Integer tables that turn one image's symbols into section bytes and back (entropy.py)."""

    def arrays(self) -> dict[str, np.ndarray]: ...
    def constrain(self, symbols: np.ndarray, level: int) -> np.ndarray: ...
    def encode(self, symbols: np.ndarray, level: int) -> list[bytes]: ...
    def level_of(self, chunks: list[bytes]) -> int: ...
    def rate_cost(self, level: int, bias: float) -> RateCost | None: ...
    def decode(self, chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray: ...


class Bottleneck(Protocol):
    levels: int
    """Rate levels 1..levels (RVQ: stages used; VAE: gain vectors); quality q uses one."""
    sections: int
    """Most coarse-to-fine sections of symbols a file can have."""
    entropy_model: type
    """The EntropyModel class its tables are stored as."""

    def initialise(self, latents: torch.Tensor, seed: int = 0) -> None:
        """Data-dependent initialisation from latents (N, C) of training crops."""
        ...

    def forward(self, latent: torch.Tensor, level: torch.Tensor | None) -> BottleneckOutput:
        """Training pass; ``level`` (B,) is each sample's rate level (None: the finest)."""
        ...

    def encode(self, latent: torch.Tensor, level: int, cost: RateCost | None = None) -> np.ndarray:
        """Latent (B, C, h, w) -> int32 symbols (sections, B, *symbol_shape), each choice
        minimising distortion plus ``cost`` where the bottleneck supports it. A bottleneck
        whose class sets ``beam_search = True`` also takes ``paths``, the code sequences a
        beam search keeps (1: greedy)."""
        ...

    def decode(self, symbols: np.ndarray, level: int) -> torch.Tensor:
        """Symbols (sections, B, *symbol_shape) at ``level`` -> latent (B, C, h, w)."""
        ...

    def unquantized(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (B, C, h, w) through the finest level's maps with no quantization: what the
        decoder would get from a perfect quantizer, so synthesis of it is the transforms' ceiling."""
        ...

    def symbol_shape(self, h: int, w: int) -> tuple[int, ...]:
        """Shape of one section's symbols for a latent grid of h x w."""
        ...

    def fit_entropy(self, symbols: Callable[[int], list[np.ndarray]], config) -> EntropyModel:
        """Integer tables, from training symbols at a level (``symbols(level)``, called only if
        needed) or the bottleneck's own prior; ``config`` is the ModelConfig."""
        ...


REGISTRY: dict[str, Callable[..., Bottleneck]] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        REGISTRY[name] = cls
        return cls

    return add


def create(kind: str, **kwargs: object) -> Bottleneck:
    return REGISTRY[kind](**kwargs)


from . import lattice, rvq, sparse, vae  # noqa: E402,F401  (register the built-in bottlenecks)
