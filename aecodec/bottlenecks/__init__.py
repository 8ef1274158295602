"""Bottlenecks: what sits between the analysis and synthesis transforms.

A bottleneck turns a float latent into integer symbols, ordered coarse to fine in *sections*
(for the RVQ, one section per stage), and back. Every bottleneck follows the same small
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
    """Auxiliary loss of the bottleneck (commitment or rate term), already weighted."""
    metrics: dict[str, float] = field(default_factory=dict)


RateCost = Callable[[int, "torch.Tensor | None"], torch.Tensor]
"""``cost(section, previous_symbols)`` -> (N, alphabet) penalty, or one (alphabet,) row for all
positions, added to each choice's distortion when encoding section ``section``
(previous_symbols: the flat symbols of the section before at the same N positions, or None):
lambda times its code length, for entropy-constrained quantization."""


class Bottleneck(Protocol):
    sections: int
    """Number of coarse-to-fine sections of symbols; quality levels use a prefix of them."""
    alphabet: int
    """Symbols are integers in [0, alphabet)."""

    def forward(self, latent: torch.Tensor, sections: torch.Tensor | None) -> BottleneckOutput:
        """Training pass; ``sections`` (B,) says how many sections each sample may use."""
        ...

    def encode(self, latent: torch.Tensor, sections: int, cost: RateCost | None = None) -> np.ndarray:
        """Latent (B, C, h, w) -> int32 symbols (sections, B, h, w), each choice minimising
        distortion plus ``cost``."""
        ...

    def decode(self, symbols: np.ndarray) -> torch.Tensor:
        """int32 symbols (n, B, h, w), any n <= sections -> latent (B, C, h, w)."""
        ...


REGISTRY: dict[str, Callable[..., Bottleneck]] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        REGISTRY[name] = cls
        return cls

    return add


def create(kind: str, **kwargs: object) -> Bottleneck:
    return REGISTRY[kind](**kwargs)


from . import rvq  # noqa: E402,F401  (registers the built-in bottleneck)
