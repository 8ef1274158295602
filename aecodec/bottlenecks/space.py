"""The coding space a quantizer works in: an affine map of the latent taken from a trained
bottleneck, so that one unit of error costs about the same on every axis.

z = project @ (y - mean) going in and y = unproject @ z + mean coming out, the identity until
``adopt_coding_space``. A VAE's finest level gives it (``GainedVAE.coding_space``): its
rotation onto the latent's principal axes, scaled by that level's gains, is where its own
rounding was trained to cost alike on every channel. ``balance`` then checks that against the
synthesis itself and rescales the axes where it was not so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import nn


class CodingSpace(nn.Module):
    balanced = False
    """Whether training rescales the adopted space by ``balance`` (a quantizer with the same
    step on every axis wants it; one that adopts per-level steps in the space keeps the space
    those steps were measured in)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("project", torch.eye(dim))
        self.register_buffer("unproject", torch.eye(dim))

    @torch.no_grad()
    def adopt_coding_space(self, mean: torch.Tensor, project: torch.Tensor, unproject: torch.Tensor,
                           steps: torch.Tensor | None = None) -> None:
        """Quantize in z = project @ (y - mean), decode through y = unproject @ z + mean, with a
        map from the bottleneck whose transforms this one takes over (``steps``, that
        bottleneck's rounding steps in the space, are for quantizers that follow them)."""
        self.mean.copy_(mean)
        self.project.copy_(project)
        self.unproject.copy_(unproject)

    def balance(self, synthesis: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                probes: int = 8, seed: int = 0) -> torch.Tensor:
        """Rescale each axis so that a unit error on it costs the same squared pixel error
        through ``synthesis`` (the median axis's), on ``latents`` (B, C, h, w) of training
        crops; returns the scales. Uniform steps are what a quantizer spends best only where
        errors cost alike (high-rate theory); the shipped vae's finest gains left its two
        largest axes costing 4.1 and 3.1 times less per unit than the median axis, so equal
        steps spent bits on them that other axes would have put to better use.

        The cost of axis c is the mean over positions of |d pixels / d z_c|^2, the diagonal of
        J^T J, estimated as E_v (J^T v)^2 over ``probes`` Gaussian pixel vectors v
        (Hutchinson's estimator: one backward pass each, not one synthesis per axis)."""
        b, _, h, w = latents.shape
        with torch.enable_grad():
            z = self._to_space(rearrange(latents.detach().float(), "b c h w -> (b h w) c")).requires_grad_(True)
            image = synthesis(rearrange(self._from_space(z), "(b h w) c -> b c h w", b=b, h=h, w=w))
            generator = torch.Generator().manual_seed(seed)
            cost = torch.zeros(self.dim, dtype=torch.float64)
            for _ in range(probes):
                v = torch.randn(image.shape, generator=generator).to(image)
                (grad,) = torch.autograd.grad(image, z, v, retain_graph=True)
                cost += grad.double().square().sum(0).cpu()
        scale = (cost / cost.median()).sqrt().clamp(min=2**-6).float()  # an axis the synthesis ignores stays finite
        with torch.no_grad():
            self.project.mul_(scale[:, None].to(self.project))
            self.unproject.div_(scale[None, :].to(self.unproject))
        return scale

    def _to_space(self, flat: torch.Tensor) -> torch.Tensor:
        """Rows (N, C) of the latent -> rows of the coding space."""
        return (flat - self.mean) @ self.project.t()

    def _from_space(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.unproject.t() + self.mean

    @torch.no_grad()
    def unquantized(self, latent: torch.Tensor) -> torch.Tensor:
        """The latent through the coding space and back with no quantization: the ceiling's path."""
        b, _, h, w = latent.shape
        flat = rearrange(latent.float(), "b c h w -> (b h w) c")
        return rearrange(self._from_space(self._to_space(flat)), "(b h w) c -> b c h w", b=b, h=h, w=w)
