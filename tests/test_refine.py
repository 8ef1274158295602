"""The refinement layer on its own: exact symbol round trips, bounded error, hostile sections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aecodec import FormatError, refine


def _planes(seed: int, channels: int, h: int, w: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (channels, h, w), dtype=np.uint8)
    base = np.clip(x + rng.normal(0, noise, x.shape).round(), 0, 255).astype(np.uint8)
    base[:, : h // 2, : w // 3] = x[:, : h // 2, : w // 3]  # some all-zero blocks
    return x, base


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("step", [1, 2, 7, 40, 255])
def test_symbols_round_trip_and_error_is_bounded(channels, step):
    x, base = _planes(step, channels, 45, 70, 12.0)
    q = refine.quantize(x, base, step)
    got_step, got = refine.decode(refine.encode(q, step), channels, 45, 70)
    assert got_step == step and np.array_equal(got, q)
    err = np.abs(refine.apply(base, got, step).astype(int) - x).max()
    assert err <= step // 2


def test_a_finer_step_costs_more_bits_and_gives_less_error():
    x, base = _planes(0, 3, 64, 64, 10.0)
    sizes = [len(refine.encode(refine.quantize(x, base, s), s)) for s in (1, 3, 9, 27)]
    assert sizes == sorted(sizes, reverse=True)


def test_all_zero_residual_costs_only_the_header():
    x, _ = _planes(1, 3, 128, 128, 0.0)
    data = refine.encode(refine.quantize(x, x, 5), 5)
    assert len(data) <= 1 + 2 * refine.CLASSES + 3 * refine.CONTEXTS + 8


@pytest.mark.parametrize("bad, message", [
    (b"", "truncated"),
    (bytes([0]) + bytes(100), "step 0"),
    (bytes([3]) + bytes(16) + bytes([200]) * (3 * refine.CONTEXTS) + bytes(8), "unknown table"),
    (bytes([3]) + bytes(16 + 3 * refine.CONTEXTS) + b"abc", "32-bit words"),
])
def test_hostile_sections_are_rejected(bad, message):
    with pytest.raises(FormatError, match=message):
        refine.decode(bad, 3, 20, 20)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([1, 3]))
def test_random_sections_decode_or_fail_cleanly(blob, channels):
    try:
        step, q = refine.decode(blob, channels, 17, 23)
    except FormatError:
        return
    assert q.shape == (channels, 17, 23) and 1 <= step <= 255
    assert np.abs(q).max(initial=0) <= (255 + step // 2) // step
