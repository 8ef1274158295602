"""Integer tables and ANS coding: exact, integer-only, and better than log2(K) when they should be."""

from __future__ import annotations

import numpy as np
import torch

from aecodec.entropy import PRECISION, IndexEntropyModel, normalize_counts


def test_normalized_rows_sum_exactly():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 65535, (5, 3, 256)).astype(np.uint16)
    counts[0, 0] = 0
    table = normalize_counts(counts)
    assert table.dtype == np.int64
    assert (table.sum(-1) == (1 << PRECISION) - 256).all()
    assert (table >= 0).all()


def test_tables_and_contexts_are_integers(tiny_model):
    e = tiny_model.entropy
    assert e.counts.dtype == np.uint16 and e.context_map.dtype == np.uint8


def _correlated_symbols(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Two sections where the second depends on the first, with a skewed first section."""
    rng = np.random.default_rng(seed)
    first = np.minimum(rng.geometric(0.05, n) - 1, k - 1)
    second = (first * 7 + rng.integers(0, 3, n)) % k
    return np.stack([first, second]).astype(np.int32)


def test_round_trip_and_gain_over_fixed_length():
    k = 64
    sym = _correlated_symbols(20000, k)
    model = IndexEntropyModel.fit(sym, k, groups=16)
    chunks = model.encode(sym)
    assert np.array_equal(model.decode(chunks, sym.shape[1:]), sym)
    bits = 8 * sum(len(c) for c in chunks)
    static = IndexEntropyModel.fit(sym, k, groups=1)
    static_bits = 8 * sum(len(c) for c in static.encode(sym))
    assert bits < 0.75 * sym.size * np.log2(k)  # skew + context pay off ...
    assert bits < 0.85 * static_bits  # ... and the context alone does


def test_unseen_symbols_still_code():
    sym = np.zeros((2, 100), dtype=np.int32)
    model = IndexEntropyModel.fit(sym, 16, groups=2)
    other = np.full((2, 10), 15, dtype=np.int32)
    assert np.array_equal(model.decode(model.encode(other), (10,)), other)


def test_a_prefix_of_sections_decodes_alone():
    k = 32
    sym = _correlated_symbols(500, k)
    model = IndexEntropyModel.fit(sym, k, groups=4)
    chunks = model.encode(sym)
    assert np.array_equal(model.decode(chunks[:1], (500,)), sym[:1])


def test_decoded_symbols_do_not_depend_on_any_network_weight(tiny_model):
    """The decoder's symbols come from integer tables only: perturbing every float parameter
    of the transforms (what differs across machines) leaves them unchanged."""
    import copy

    import torch

    from aecodec import bitstream
    from aecodec.codec import Codec

    from .conftest import smooth_image

    data = Codec(tiny_model).compress(smooth_image(64, 48), 4)
    f = bitstream.read(data)
    perturbed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    assert np.array_equal(Codec(perturbed)._symbols(f), Codec(tiny_model)._symbols(f))


def test_rate_biased_encoding_spends_fewer_bits_and_still_decodes(tiny_model):
    import copy

    from aecodec.codec import Codec

    from .conftest import smooth_image

    img = smooth_image(96, 64, seed=3)
    plain = Codec(tiny_model)
    biased_model = copy.deepcopy(tiny_model)
    biased_model.config.rate_bias = 1e3  # bits dominate: the likeliest codes win
    biased = Codec(biased_model)
    q = plain.quality_levels[-1]
    small, big = biased.compress(img, q), plain.compress(img, q)
    assert len(small) < len(big)
    assert plain.decompress(small).size == img.size  # the same decoder reads both


def test_rate_bias_is_dimensionless(tiny_model):
    """Bits are priced in each stage's own units, so a latent and codebooks scaled together (by
    powers of 2: exact in floating point) get the very same rate-biased choices. A price in
    absolute units fails this: bits swamp the distances at one end, vanish at the other."""
    import copy

    from aecodec.bottlenecks.rvq import ResidualVQ

    model = copy.deepcopy(tiny_model)
    model.config.rate_bias = 0.4
    rvq = model.bottleneck
    cost = model.rate_cost(rvq.levels)
    assert isinstance(rvq, ResidualVQ)
    latent = torch.randn(1, rvq.dim, 6, 5, generator=torch.Generator().manual_seed(0)) * rvq.codebooks[0].std()
    biased = rvq.encode(latent, rvq.levels, cost)
    assert not np.array_equal(rvq.encode(latent, rvq.levels), biased)  # the bias does change choices
    for factor in (2.0**-10, 2.0**10):
        scaled = copy.deepcopy(rvq)
        scaled.codebooks.mul_(factor)
        assert np.array_equal(scaled.encode(latent * factor, rvq.levels, cost), biased)


def test_groups_pop_in_push_order_and_skip_uncoded_positions():
    """pop_groups undoes push_groups; a position whose context names no table (-1, or beyond
    the last) is neither coded nor touched."""
    import constriction

    from aecodec.entropy import categorical, pop_groups, push_groups

    rng = np.random.default_rng(0)
    ctx = rng.integers(-1, 4, (7, 9))
    symbols = rng.integers(0, 5, (7, 9)).astype(np.int32)
    models = [categorical(normalize_counts(rng.integers(1, 100, 5))) for _ in range(3)]  # 3: skipped
    coder = constriction.stream.stack.AnsCoder()
    push_groups(coder, symbols, ctx, models)
    out = np.full((7, 9), -5, dtype=np.int32)
    coder = constriction.stream.stack.AnsCoder(coder.get_compressed())
    pop_groups(coder, ctx, models, out)
    coded = (ctx >= 0) & (ctx < 3)
    assert np.array_equal(out[coded], symbols[coded]) and (out[~coded] == -5).all() and coder.is_empty()
