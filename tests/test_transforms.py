"""The transforms: GDN that can learn, and the lapped transform's linear start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecodec.errors import ModelError
from aecodec.model import AutoEncoder, ModelConfig
from aecodec.transforms import GDN, LappedAnalysis, LappedSynthesis, block_klt

from .conftest import smooth_image


@pytest.mark.parametrize("inverse", [False, True])
def test_every_gdn_parameter_gets_gradient(inverse: bool) -> None:
    """A fresh GDN's beta and every entry of gamma, off-diagonals included, get a gradient:
    squared parameters started at exactly 0 never would, and gamma stayed diagonal."""
    torch.manual_seed(0)
    gdn = GDN(8, inverse=inverse)
    x = torch.randn(2, 8, 5, 5)
    (gdn(x) * torch.randn(2, 8, 5, 5)).sum().backward()
    for name, param in gdn.named_parameters():
        assert param.grad is not None and bool((param.grad != 0).all()), name


def test_gdn_off_diagonals_move_in_training() -> None:
    """A few Adam steps give gamma off-diagonal entries far above their start: GDN becomes a
    normalization across channels, not a per-channel gain."""
    torch.manual_seed(0)
    gdn = GDN(4)
    opt = torch.optim.Adam(gdn.parameters(), lr=1e-2)
    target = torch.randn(64, 4, 1, 1)
    x = target * (1 + target.roll(1, 1).abs())  # channel 0 scaled by channel 3's size, etc.
    for _ in range(50):
        loss = (gdn(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gamma = gdn.gamma_raw.detach().square()
    assert float((gamma - torch.diag(gamma.diagonal())).abs().max()) > 1e-4


def _images() -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(smooth_image(64, 48, seed=s))).permute(2, 0, 1)
                        for s in range(3)]).float() / 255


def test_block_klt_is_orthonormal_and_ordered() -> None:
    basis, mean = block_klt(_images(), 100)
    flat = basis.flatten(1).double()
    assert torch.allclose(flat @ flat.T, torch.eye(100, dtype=torch.float64), atol=1e-5)
    assert mean.shape == (3,)
    energy = (torch.nn.functional.unfold(_images() - mean[:, None, None], 16, stride=16)
              .transpose(1, 2).reshape(-1, 768) @ flat.float().T).square().mean(0)
    assert bool((energy[:-1] >= energy[1:] - 1e-6).all())  # the largest variance first


def test_lapped_transform_starts_as_the_block_klt() -> None:
    """With every coefficient kept, the KLT-initialised lapped pair rebuilds an image exactly
    (the residual branches start at zero); with fewer it is a block PCA of that many."""
    x = _images()
    analysis, synthesis = LappedAnalysis(8, 768), LappedSynthesis(8, 768)
    basis, mean = block_klt(x, 768)
    analysis.initialise(basis, mean)
    synthesis.initialise(basis, mean)
    with torch.no_grad():
        latent = analysis(x)
        assert latent.shape == (3, 768, 3, 4)
        assert torch.allclose(synthesis(latent), x, atol=1e-4)
        kept = latent.clone()
        kept[:, 48:] = 0  # the first 48 coefficients' projection: the block PCA of 48
        direct = synthesis.linear(analysis.linear(x) * (torch.arange(768) < 48)[:, None, None])
        assert torch.allclose(synthesis(kept), direct, atol=1e-5)


def test_lapped_model_trains_its_residual_branch() -> None:
    """The zeroed residual branches get gradient on their last layer at once (so training can
    leave the linear start), and a model file of the new design loads with its transform."""
    model = AutoEncoder(ModelConfig(bottleneck="vae", transform="lapped", channels=8, latent=32,
                                    bottleneck_args={"lambdas": [0.01]}, qualities=[1], default_quality=1))
    x = _images()
    x_hat, out, _ = model(x, torch.ones(3, dtype=torch.long))
    ((x_hat - x).square().mean() + out.bits.mean() * 1e-6).backward()
    for part in (model.analysis, model.synthesis):
        assert bool((part.residual[-1].weight.grad != 0).any())
    assert model.config.transform == "lapped"


def test_unknown_transform_is_refused() -> None:
    with pytest.raises(ModelError, match="unknown transform"):
        ModelConfig(transform="wavelet")
