"""Growing a trained model's latent: more channels, and at first the same reconstructions
(``grow``), or better ones (``add_detail``).

A model's latent width caps the quality it can reach: a linear PCA of 16x16 blocks keeping 96
components holds the held-out training photos to 28-42 dB, keeping 192 to 31-46 dB. Training a
wider model from scratch costs what the narrow one cost; growing it keeps every trained weight.
The analysis's last convolution gets new output channels (random, with the spread of the old
ones), the synthesis's first gets matching inputs (1/20 of that spread, so reconstructions
move by a few 8-bit levels at most), and the bottleneck extends its own state to the new
channels (``grow``, which a bottleneck may implement). Training then decides what they carry.

A lapped pair grows differently: its new channels are detail coefficients, each 16x16
block's projection onto the principal axes of what the trained pair fails to reconstruct, less
what its linear path already puts there (``transforms.LappedSynthesis``). Those misses are what caps the quality a quantizer can reach: the shipped pair
held Kodak's most textured image (kodim13) to 33.2 dB with no quantization at all, where a
block PCA of the same size holds 36.8.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .errors import ModelError
from .model import AutoEncoder
from .transforms import block_klt

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


@torch.no_grad()
def add_detail(old: AutoEncoder, detail: int, crops: torch.Tensor, seed: int = 0, batch: int = 16) -> AutoEncoder:
    """``old`` (a lapped pair without detail channels) with ``detail`` more channels, detail
    coefficients on the principal axes of its misses on ``crops`` (N, 3, H, W): the training
    images less their reconstruction through the finest level with no quantization. The
    bottleneck grows block by block, so the old channels are coded as before."""
    if old.config.transform != "lapped" or old.config.detail:
        raise ModelError(f"only a lapped pair without detail channels can add them, not {old.config.transform}"
                         + (f" with {old.config.detail}" if old.config.detail else ""))
    if not hasattr(old.bottleneck, "grow"):
        raise ModelError(f"the {old.config.bottleneck} bottleneck cannot grow its latent")
    parts = crops.split(batch)
    seen = [old.bottleneck.unquantized(old.analyse(x)) for x in parts]  # the base as the decoder sees it
    basis, _ = block_klt(torch.cat([x - old.synthesis(s) for x, s in zip(parts, seen)]), detail)
    new = AutoEncoder(replace(old.config, latent=old.config.latent + detail, detail=detail))
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("bottleneck.")}
    new.load_state_dict(state | {"synthesis.detail": basis}, strict=False)
    latents = torch.cat([torch.cat([old.analyse(x), new.synthesis.detail_of(x, s)], 1) for x, s in zip(parts, seen)])
    new.bottleneck.grow(old.bottleneck, latents.permute(0, 2, 3, 1).reshape(-1, new.config.latent), seed=seed)
    return new
