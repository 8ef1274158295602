"""The coding space a quantizer works in: an affine map of the latent taken from a trained
bottleneck, so that one unit of error costs about the same on every axis.

z = project @ (y - mean) going in and y = unproject @ z + mean coming out, the identity until
``adopt_coding_space``. A VAE's finest level gives it (``GainedVAE.coding_space``): its
rotation onto the latent's principal axes, scaled by that level's gains, is where its own
rounding was trained to cost alike on every channel.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class CodingSpace(nn.Module):
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
