"""Growing a trained model's latent: more channels, and at first the same reconstructions.

A model's latent width caps the quality it can reach: a linear PCA of 16x16 blocks keeping 96
components holds the held-out training photos to 28-42 dB, keeping 192 to 31-46 dB. Training a
wider model from scratch costs what the narrow one cost; growing it keeps every trained weight.
The analysis's last convolution gets new output channels (random, with the spread of the old
ones), the synthesis's first gets matching inputs (1/20 of that spread, so reconstructions
move by a few 8-bit levels at most), and the bottleneck extends its own state to the new
channels (``grow``, which a bottleneck may implement). Training then decides what they carry.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .errors import ModelError
from .model import AutoEncoder

NEW_INPUT_SCALE = 0.05
"""Spread of the synthesis's new input weights, relative to its old ones: small enough to
leave the output almost unchanged, large enough that training sees a gradient at once."""


@torch.no_grad()
def grow(old: AutoEncoder, latent: int, crops: torch.Tensor, seed: int = 0) -> AutoEncoder:
    """``old`` with a latent of ``latent`` channels; ``crops`` (N, 3, H, W) are training images
    from which the bottleneck initialises the new channels."""
    if latent <= old.config.latent:
        raise ModelError(f"cannot grow a latent of {old.config.latent} channels to {latent}")
    if old.config.transform != "gdn":
        raise ModelError(f"only the gdn transform can grow its latent, not {old.config.transform}")
    if not hasattr(old.bottleneck, "grow"):
        raise ModelError(f"the {old.config.bottleneck} bottleneck cannot grow its latent")
    generator = torch.Generator().manual_seed(seed)
    new = AutoEncoder(replace(old.config, latent=latent))
    state = {k: v.clone() for k, v in old.state_dict().items() if not k.startswith("bottleneck.")}
    extra = latent - old.config.latent
    last = f"analysis.{len(old.analysis) - 1}"
    w = state[f"{last}.weight"]
    state[f"{last}.weight"] = torch.cat([w, torch.randn(extra, *w.shape[1:], generator=generator) * w.std()])
    state[f"{last}.bias"] = torch.cat([state[f"{last}.bias"], torch.zeros(extra)])
    w = state["synthesis.0.weight"]  # a transposed convolution: inputs first
    state["synthesis.0.weight"] = torch.cat(
        [w, torch.randn(extra, *w.shape[1:], generator=generator) * w.std() * NEW_INPUT_SCALE])
    new.load_state_dict(state, strict=False)
    latents = new.analysis(crops).permute(0, 2, 3, 1).reshape(-1, latent)
    new.bottleneck.grow(old.bottleneck, latents, seed=seed)
    return new
