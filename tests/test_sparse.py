"""The sparse bottleneck: significance map plus values, and its growth from a VAE."""

from __future__ import annotations

import numpy as np
import torch

from aecodec.codec import load
from aecodec.entropy import FactorizedTables, SparseTables

from .conftest import train_from


def _clustered(n: int, channels: int, seed: int = 0) -> np.ndarray:
    """Values (1, C, n): at each position every channel is zero, or none is (70% zero)."""
    rng = np.random.default_rng(seed)
    active = rng.random(n) < 0.3
    values = rng.integers(1, 4, (channels, n)) * rng.choice([-1, 1], (channels, n))
    return np.where(active, values, 0).astype(np.int32)[None]


def test_significance_map_saves_bits_where_zeros_cluster():
    channels, n = 6, 4000
    train = _clustered(n, channels, seed=1)
    # the factorized prior: the true marginal of each value, as integer counts over -4..4
    marginal = np.stack([np.bincount(train[0, c] + 4, minlength=9) for c in range(channels)])
    prior = FactorizedTables(marginal[None] * 1000, np.full((1, channels), -4))
    sparse = SparseTables.fit(prior, [[train.reshape(1, 1, channels, n, 1)]])
    test = _clustered(n, channels, seed=2)
    plain_bytes = len(prior.encode(test, 1)[0])
    sparse_bytes = len(sparse.encode(test, 1)[0])
    assert np.array_equal(sparse.decode(sparse.encode(test, 1), (channels, n)), test)
    assert sparse_bytes < 0.8 * plain_bytes  # channels after the first two know the zeros


def test_decoded_values_are_the_encoders(tiny_sparse):
    model = tiny_sparse.model
    latent = torch.randn(1, 8, 4, 6) * 20
    for level in range(1, model.bottleneck.levels + 1):
        symbols = model.symbols(latent, level)
        chunks = model.entropy.encode(symbols[:, 0], level)
        assert np.array_equal(model.entropy.decode(chunks, (8, 4, 6)), symbols[:, 0])


def test_grown_from_a_vae_keeps_its_gains_and_prior(tmp_path, capsys, tiny_vae):
    out = train_from(tmp_path, tiny_vae.model, [
        "--name", "sp", "--bottleneck", "sparse", "--channels", "8", "--latent", "8",
        "--lambdas", "0.001,0.01,0.05,0.2", "--steps", "500", "--warmup", "500"])
    assert "transforms only" not in capsys.readouterr().out
    grown = load(out / "sp.safetensors").model
    assert torch.equal(grown.bottleneck.gain, tiny_vae.model.bottleneck.gain)
    assert isinstance(grown.entropy, SparseTables)
