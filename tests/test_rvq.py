"""The residual VQ's training state: what its files store and what loading rebuilds."""

from __future__ import annotations

import torch

from aecodec.bottlenecks.rvq import ResidualVQ


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
