"""The transforms: GDN that can learn, and the lapped transform's linear start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecodec.errors import ModelError
from aecodec.model import AutoEncoder, ModelConfig
from aecodec.transforms import GDN, LappedAnalysis, LappedSynthesis, block_klt

from .conftest import smooth_image, train_from


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
    with pytest.raises(ModelError, match="detail channels need the lapped transform"):
        ModelConfig(transform="gdn", latent=16, detail=4)
    with pytest.raises(ModelError, match="fewer than the latent"):
        ModelConfig(transform="lapped", latent=16, detail=16)


def _orthonormal(rows: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(768, rows, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T.reshape(rows, 3, 16, 16).float()


def test_detail_coefficients_are_what_the_linear_path_misses() -> None:
    """Within the detail subspace the image is the linear path's plus the coded coefficients
    (the residual branch is kept out); coded with ``detail_of``, the image's detail is exactly
    the input's, whatever the other channels made; coded as 0, it is the linear path's."""
    torch.manual_seed(0)
    synthesis = LappedSynthesis(8, 20, detail=4)
    x = _images()
    with torch.no_grad():
        synthesis.detail.copy_(_orthonormal(4))
        torch.nn.init.normal_(synthesis.residual[-1].weight, std=0.1)  # a residual branch that is not 0
        base = torch.randn(3, 16, 3, 4)
        project = lambda img: torch.nn.functional.conv2d(img, synthesis.detail, stride=16)
        coded = synthesis.detail_of(x, base)
        assert coded.shape == (3, 4, 3, 4)
        image = synthesis(torch.cat([base, coded], 1))
        assert torch.allclose(project(image), project(x), atol=1e-5)
        coarse = synthesis(torch.cat([base, torch.zeros_like(coded)], 1))
        assert torch.allclose(project(coarse), project(synthesis.linear(base)), atol=1e-5)
        others = synthesis.linear(base) + synthesis.residual(base)  # outside the subspace: the plain pair
        outside = lambda img: img - torch.nn.functional.conv_transpose2d(project(img), synthesis.detail, stride=16)
        assert torch.allclose(outside(image), outside(others), atol=1e-5)


def _ceiling(model: AutoEncoder, x: torch.Tensor) -> float:
    with torch.no_grad():
        y = model.synthesis(model.bottleneck.unquantized(model.analyse(x)))
    return float(-10 * torch.log10((y - x).square().mean()))


def _textured(seeds) -> torch.Tensor:
    """Smooth images with a fine texture on top, which a pair fitted to smooth ones misses."""
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    out = []
    for s in seeds:
        phase = float(torch.rand(1, generator=torch.Generator().manual_seed(s))) * 6
        smooth = torch.from_numpy(np.array(smooth_image(64, 48, seed=s))).permute(2, 0, 1).float() / 255
        out.append((smooth + 0.15 * torch.sin(2.1 * xx + phase) * torch.sin(1.3 * yy)).clamp(0, 1))
    return torch.stack(out)


def test_added_detail_channels_raise_the_ceiling_and_keep_the_rest(tiny_lapped) -> None:
    """``add_detail`` fits the basis to what the pair misses: the no-quantization PSNR rises,
    on the fitting images and on another, and the old channels are coded as before."""
    from aecodec.grow import add_detail

    old = tiny_lapped.model
    x, unseen = _textured(range(3)), _textured([9])
    new = add_detail(old, 6, x, seed=0).eval()
    assert (new.config.latent, new.config.detail) == (14, 6)
    for images in (x, unseen):
        assert _ceiling(new, images) > _ceiling(old, images) + 1.0
    with torch.no_grad():
        before, after = old.bottleneck.encode(old.analyse(x), 4), new.bottleneck.encode(new.analyse(x), 4)
    assert np.array_equal(before, after[:, :, :8])
    with pytest.raises(ModelError, match="without detail channels"):
        add_detail(new, 2, x)


def test_train_adds_detail_channels_under_a_lattice(tmp_path, tiny_lapped, capsys) -> None:
    """``aecodec train --bottleneck lattice --init <lapped vae> --detail N``: the exported
    model codes its latent with the detail channels, and a count that does not add up is a
    clear error."""
    from aecodec import load

    common = ["--name", "tld", "--bottleneck", "lattice", "--transform", "lapped", "--channels", "8",
              "--steps", "500", "--warmup", "500"]
    out = train_from(tmp_path, tiny_lapped.model, common + ["--latent", "12", "--detail", "4"])
    assert "4 of them detail channels" in capsys.readouterr().out
    codec = load(out / "tld.safetensors")
    assert (codec.model.config.latent, codec.model.config.detail) == (12, 4)
    img = smooth_image(40, 30)
    assert codec.decompress(codec.compress(img, 19)).size == (40, 30)
    with pytest.raises(SystemExit, match="adds 4 detail channels, not 2"):
        (tmp_path / "again").mkdir()
        train_from(tmp_path / "again", tiny_lapped.model, common + ["--latent", "12", "--detail", "2"])


def test_fast_linear_synthesis_is_the_transposed_convolution() -> None:
    """``LappedSynthesis._linear`` (a matrix product and an overlap-add) computes what the
    transposed convolution it stands for does, on an odd-sized latent."""
    torch.manual_seed(0)
    synthesis = LappedSynthesis(8, 24)
    torch.nn.init.normal_(synthesis.linear.weight)
    torch.nn.init.normal_(synthesis.linear.bias)
    base = torch.randn(2, 24, 3, 5)
    with torch.no_grad():
        assert torch.allclose(synthesis._linear(base), synthesis.linear(base), atol=1e-4)
