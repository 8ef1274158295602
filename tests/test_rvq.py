"""The residual VQ: its training state, what its files store and what loading rebuilds, and its
ECVQ codebooks on channel groups."""

from __future__ import annotations

import numpy as np
import torch

from aecodec.bottlenecks.rvq import ResidualVQ
from aecodec.bottlenecks.vae import BIT_VALUE
from aecodec.entropy import IndexEntropyModel
from aecodec.model import ModelConfig


def _trained_rvq() -> ResidualVQ:
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=4, stages=3, codebook_size=8)
    rvq.initialise(torch.randn(256, 4))
    rvq.train()
    for _ in range(5):
        rvq(torch.randn(2, 4, 4, 4), None)  # EMA updates, dead codes revived
    return rvq


def test_files_keep_the_ema_count_and_rebuild_the_sum():
    rvq = _trained_rvq()
    state = rvq.state_dict()
    assert "ema_sum" not in state and "ema_count" in state
    loaded = ResidualVQ(dim=4, stages=3, codebook_size=8)
    loaded.load_state_dict(state)
    assert torch.allclose(loaded.ema_sum, rvq.ema_sum, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 4, 4, 4)
    for model in (rvq, loaded.train()):  # training continues as if the sum had been stored
        torch.manual_seed(1)  # the same picks for any dead code
        model(x, None)
    assert torch.allclose(loaded.codebooks, rvq.codebooks, rtol=1e-5, atol=1e-6)


def test_files_that_store_the_ema_sum_still_load():
    rvq = _trained_rvq()
    older = rvq.state_dict() | {"ema_sum": rvq.ema_sum.clone()}
    loaded = ResidualVQ(dim=4, stages=3, codebook_size=8)
    loaded.load_state_dict(older)
    assert torch.equal(loaded.codebooks, rvq.codebooks)


def _grouped_rvq(seed: int = 0) -> tuple[ResidualVQ, torch.Tensor]:
    """4 groups of 2 channels, ECVQ stages at halving steps; the last group nearly silent."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(4096, 8, generator=gen) * torch.tensor([8.0, 6, 4, 3, 2, 1.5, 0.01, 0.01])
    rvq = ResidualVQ(dim=8, stages=3, codebook_size=16, group_dim=2)
    rvq.adopt_coding_space(torch.zeros(8), torch.eye(8), torch.eye(8), steps=torch.tensor([4.0, 2.0]))
    rvq.initialise(latents, seed=seed)
    return rvq.eval(), latents


def test_ecvq_stages_are_priced_at_the_steps_and_beyond():
    rvq, _ = _grouped_rvq()
    assert torch.allclose(rvq.price, BIT_VALUE * torch.tensor([4.0, 2.0, 1.0]) ** 2)  # the last ratio continues
    assert torch.equal(rvq.bit_value(), rvq.price)


def test_ecvq_gives_a_silent_group_one_code():
    """A group with no energy worth its bits keeps one code: every slot repeats it."""
    rvq, latents = _grouped_rvq()
    quiet = rvq.codebooks[:, 3]  # (stages, K, 2)
    assert torch.equal(quiet, quiet[:, :1].expand_as(quiet))
    loud = rvq.codebooks[0, 0]
    assert len(torch.unique(loud, dim=0)) > 4


def test_grouped_symbols_decode_to_their_codes_in_any_batch():
    rvq, latents = _grouped_rvq()
    y = latents[:24].T.reshape(1, 8, 4, 6)
    sym = rvq.encode(y, 3)
    assert sym.shape == (3, 1, 4, 4, 6)  # (stages, batch, groups, h, w)
    flat = torch.from_numpy(sym).permute(0, 1, 3, 4, 2).reshape(3, -1, 4).long()
    codes = sum(rvq.codebooks[s][torch.arange(4), flat[s]] for s in range(3))
    decoded = rvq.decode(sym, 3)
    assert torch.allclose(decoded.permute(0, 2, 3, 1).reshape(-1, 8), codes.reshape(-1, 8))
    pair = rvq.encode(torch.cat([y, y.flip(3)]), 3)
    assert np.array_equal(pair[:, :1], sym)
    assert torch.equal(rvq.decode(pair, 3)[:1], decoded)  # the same bits of latent in a batch


def test_grouped_tables_code_each_group_with_its_own():
    rvq, latents = _grouped_rvq()
    y = latents[:2048].T.reshape(1, 8, 32, 64)
    sym = rvq.encode(y, 3)
    tables = rvq.fit_entropy(lambda level: [rvq.encode(y, level)], ModelConfig(context_groups=4))
    assert tables.counts.shape == (3, 4, 4, 16)
    chunks = tables.encode(sym[:, 0], 3)
    assert np.array_equal(tables.decode(chunks, sym.shape[2:]), sym[:, 0])
    one = IndexEntropyModel.fit(sym[:, 0].reshape(3, 1, -1), 16, groups=4)  # all groups in one table
    assert sum(map(len, chunks)) < 0.95 * sum(map(len, one.encode(sym[:, 0].reshape(3, -1))))


def test_files_from_before_channel_groups_load_as_one_group():
    rvq = _trained_rvq()
    older = rvq.state_dict()
    older = {k: v for k, v in older.items() if k != "price"} | {
        "codebooks": older["codebooks"][:, 0], "ema_count": older["ema_count"][:, 0]}
    loaded = ResidualVQ(dim=4, stages=3, codebook_size=8)
    loaded.load_state_dict(older)
    assert torch.equal(loaded.codebooks, rvq.codebooks) and not loaded.price.any()
    counts = np.ones((3, 2, 8), dtype=np.uint16)
    legacy = IndexEntropyModel(counts, np.zeros((3, 8), dtype=np.uint8))  # tables without the group axis
    assert legacy.counts.shape == (3, 1, 2, 8) and legacy.streams == 1


def test_grouped_encoding_in_chunks_gives_the_same_symbols(monkeypatch):
    """Positions are quantized a few at a time (the chunk shrinks with the number of groups, so
    the distance matrices stay small); chunking changes no choice."""
    rvq, latents = _grouped_rvq()
    y = latents[:60].T.reshape(1, 8, 6, 10)
    whole = rvq.encode(y, 3)
    monkeypatch.setattr("aecodec.bottlenecks.rvq.ENCODE_CHUNK", 4 * 16 * 7)  # 7 positions per chunk
    assert np.array_equal(rvq.encode(y, 3), whole)


def _objective(rvq: ResidualVQ, y: torch.Tensor, sym: np.ndarray, tables: IndexEntropyModel, bias: float) -> float:
    """What the encoder minimises, summed: the error left plus every code's priced bits."""
    value = rvq.bit_value()
    bits = torch.from_numpy(tables.bits)  # (S, G, contexts, K)
    idx = torch.from_numpy(sym[:, 0].reshape(len(sym), rvq.groups, -1)).long()  # (S, G, N)
    groups = torch.arange(rvq.groups)[:, None]
    priced = 0.0
    for s in range(len(sym)):
        ctx = torch.zeros_like(idx[s]) if s == 0 else torch.from_numpy(tables.context_map[s].astype(np.int64))[groups, idx[s - 1]]
        priced += float(bias * value[s] * bits[s][groups, ctx, idx[s]].sum())
    error = (rvq.decode(sym, len(sym)) - y).square().sum()
    return float(error) + priced


def test_beam_search_finds_cheaper_codes_that_decode_as_any():
    """More paths find codes that cost less in what the encoder minimises, and the symbols
    are ordinary ones: the decoder cannot tell."""
    rvq, latents = _grouped_rvq()
    y = latents[:2048].T.reshape(1, 8, 32, 64)
    tables = rvq.fit_entropy(lambda level: [rvq.encode(y, level)], ModelConfig(context_groups=4))
    cost = tables.rate_cost(3, 0.5)
    greedy = rvq.encode(y, 3, cost)
    assert np.array_equal(rvq.encode(y, 3, cost, paths=1), greedy)
    scores = [_objective(rvq, y, rvq.encode(y, 3, cost, paths=p), tables, 0.5) for p in (1, 2, 4)]
    assert scores[0] == _objective(rvq, y, greedy, tables, 0.5)
    assert scores[2] < scores[1] < scores[0]
    beam = rvq.encode(y, 3, cost, paths=4)
    assert beam.shape == greedy.shape and beam.dtype == greedy.dtype
    assert np.array_equal(tables.decode(tables.encode(beam[:, 0], 3), beam.shape[2:]), beam[:, 0])


def test_beam_search_in_chunks_gives_the_same_symbols(monkeypatch):
    rvq, latents = _grouped_rvq()
    y = latents[:60].T.reshape(1, 8, 6, 10)
    whole = rvq.encode(y, 3, paths=3)
    monkeypatch.setattr("aecodec.bottlenecks.rvq.ENCODE_CHUNK", 4 * 16 * 3 * 7)  # 7 positions per chunk
    assert np.array_equal(rvq.encode(y, 3, paths=3), whole)
