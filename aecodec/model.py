"""The autoencoder: analysis transform -> bottleneck -> synthesis transform, plus its
entropy tables, saved together as one safetensors file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from . import bottlenecks
from .bitstream import valid_model_id
from .bottlenecks import EntropyModel, RateCost
from .errors import ModelError
from .imageio import write_atomic
from .transforms import TRANSFORMS


@dataclass
class ModelConfig:
    name: str = "rvq"
    bottleneck: str = "rvq"
    transform: str = "gdn"
    """The analysis/synthesis pair (``transforms.TRANSFORMS``): "gdn", the plain GDN stack of
    the first models, or "lapped", a linear lapped transform with the GDN stack beside it."""
    channels: int = 64
    latent: int = 64
    detail: int = 0
    """How many of the ``latent`` channels, the last ones, are detail coefficients on a fitted
    basis of 16x16 blocks (``transforms.LappedSynthesis``; ``analyse`` computes them)."""
    bottleneck_args: dict = field(default_factory=lambda: {"stages": 32, "codebook_size": 256})
    qualities: list[int] = field(default_factory=lambda: [3, 5, 8, 12, 16, 22, 28, 32])
    """The bottleneck's rate level used by quality 1, 2, ... (RVQ: stages; VAE: gain vector)."""
    default_quality: int = 4
    context_groups: int = 16
    rate_bias: float = 0.0
    """Entropy-constrained encoding: each symbol choice pays rate_bias x its code length in bits
    on top of its distortion, a bit priced at what a bit typically buys there (so the bias is
    dimensionless; see ``ResidualVQ.bit_value`` and ``vae.BIT_VALUE``). Encoder-only: files
    decode the same either way; 0 is plain nearest-code (rounding, for a VAE)."""

    def __post_init__(self) -> None:
        if not self.qualities or sorted(set(self.qualities)) != list(self.qualities) or self.qualities[0] < 1:
            raise ModelError(f"quality levels {self.qualities} must be increasing rate levels from 1")
        if not 1 <= self.default_quality <= len(self.qualities):
            raise ModelError(f"default quality {self.default_quality} is not a quality level")
        if not valid_model_id(self.name):
            raise ModelError(f"model name {self.name!r} must be 1-32 of a-z, 0-9, '_' and '-', starting with a letter or digit")
        if self.transform not in TRANSFORMS:
            raise ModelError(f"unknown transform {self.transform!r} (known: {', '.join(TRANSFORMS)})")
        if self.detail and (self.transform != "lapped" or not 0 < self.detail < self.latent):
            raise ModelError(f"{self.detail} detail channels need the lapped transform and fewer than the latent's {self.latent}")


class AutoEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        analysis, synthesis = TRANSFORMS[config.transform]
        self.analysis = analysis(config.channels, config.latent - config.detail)
        self.bottleneck = bottlenecks.create(
            config.bottleneck, dim=config.latent, **config.bottleneck_args
        )
        if config.qualities[-1] > self.bottleneck.levels:
            raise ModelError(f"quality levels {config.qualities} exceed the bottleneck's {self.bottleneck.levels} levels")
        self.synthesis = synthesis(config.channels, config.latent, **({"detail": config.detail} if config.detail else {}))
        self.entropy: EntropyModel | None = None
        self.fingerprint: bytes = b""  # set when loaded from bytes: identifies weights + tables

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> latent: the analysis, then, for detail channels, a lifting
        step: what the synthesis's linear path will miss of the image's detail, given the other
        channels as the decoder will see them (the bottleneck's finest level, unquantized; a
        bottleneck that ``grow.add_detail`` made keeps the detail channels' axes apart)."""
        latent = self.analysis(x)
        if not self.config.detail:
            return latent
        padded = torch.cat([latent, latent.new_zeros(len(latent), self.config.detail, *latent.shape[2:])], 1)
        seen = self.bottleneck.unquantized(padded)[:, : latent.shape[1]]
        return torch.cat([latent, self.synthesis.detail_of(x, seen)], 1)

    def forward(self, x: torch.Tensor, level: torch.Tensor | None = None):
        """Training pass: (reconstruction, bottleneck output, latent)."""
        latent = self.analyse(x)
        out = self.bottleneck(latent, level)
        return self.synthesis(out.latent_hat), out, latent

    # -- serialisation ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Weights, entropy tables and config as safetensors bytes (the shipped format)."""
        if self.entropy is None:
            raise ModelError("model has no entropy tables yet; fit them before exporting")
        tensors = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        tensors |= {f"entropy.{k}": torch.from_numpy(v) for k, v in self.entropy.arrays().items()}
        return st_save(tensors, metadata={"config": json.dumps(asdict(self.config))})

    @classmethod
    def from_bytes(cls, data: bytes) -> AutoEncoder:
        try:
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
            config = ModelConfig(**json.loads(meta["config"]))
            tensors = st_load(data)
            model = cls(config)
            entropy = {k[8:]: tensors.pop(k).numpy() for k in list(tensors) if k.startswith("entropy.")}
            model.load_state_dict(tensors)
            model.entropy = model.bottleneck.entropy_model(**entropy)
        except (KeyError, TypeError, ValueError, RuntimeError, ModelError) as exc:
            raise ModelError(f"not a valid aecodec model file ({exc})") from None
        model.fingerprint = hashlib.sha256(data).digest()[:8]
        return model.eval()

    def save(self, path: Path) -> None:
        write_atomic(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> AutoEncoder:
        return cls.from_bytes(Path(path).read_bytes())

    @torch.no_grad()
    def symbols(self, latent: torch.Tensor, level: int, beam: int = 1) -> np.ndarray:
        """Latent (B, C, h, w) -> symbols (sections, B, *symbol_shape) at ``level``, within the
        tables' range, rate-biased if configured; ``beam`` > 1 searches that many code paths
        where the bottleneck can (``beam_search``)."""
        search = {"paths": beam} if beam > 1 else {}
        symbols = self.bottleneck.encode(latent, level, self.rate_cost(level), **search)
        return symbols if self.entropy is None else self.entropy.constrain(symbols, level)

    def rate_cost(self, level: int) -> RateCost | None:
        """The configured rate bias times each choice's code length under the model's tables,
        or None for plain nearest-code encoding (or tables that price no choice)."""
        if not self.config.rate_bias or self.entropy is None:
            return None
        return self.entropy.rate_cost(level, self.config.rate_bias)

    @torch.no_grad()
    def fit_entropy(self, symbols: Callable[[int], list[np.ndarray]]) -> None:
        """Integer tables: fitted on symbol arrays (sections, 1, ...) of training images, which
        ``symbols(level)`` computes if the bottleneck needs them, or derived from its prior."""
        self.entropy = self.bottleneck.fit_entropy(symbols, self.config)
