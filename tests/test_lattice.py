"""The lattice residual quantizer (bit-planes) and its plane tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecodec.bottlenecks.lattice import LatticeRVQ
from aecodec.entropy import PlaneTables
from aecodec.errors import FormatError


def _quantizer_and_tables(seed: int = 0) -> tuple[LatticeRVQ, torch.Tensor, PlaneTables]:
    torch.manual_seed(seed)
    q = LatticeRVQ(6, planes=8, head=3, top_step=64.0)
    latents = torch.randn(3, 6, 9, 7) * torch.tensor([20.0, 6, 3, 2, 1, 0.5])[:, None, None]
    symbols = q.encode(latents, q.levels)
    return q, latents, PlaneTables.fit([symbols[:, i] for i in range(len(latents))], q.head)


def _deadzone(z: np.ndarray, step: float, offset: float) -> np.ndarray:
    m = np.floor(np.abs(z) / step)
    return np.sign(z) * np.where(m > 0, (m + offset) * step, 0)


def test_each_whole_plane_is_a_deadzone_quantizer_at_its_step():
    q, latents, _ = _quantizer_and_tables()
    z = latents.double().numpy()
    for plane in range(q.head - 1, q.planes):
        level = 1 + 3 * (plane - q.head + 1)  # the section that ends with this plane's last pass
        got = q.decode(q.encode(latents, level), level).double().numpy()
        assert np.allclose(got, _deadzone(z, q.top_step / 2**plane, q.offset), atol=1e-5)


def test_lower_levels_are_prefixes_and_error_falls_with_level():
    q, latents, _ = _quantizer_and_tables()
    full = q.encode(latents, q.levels)
    errors = []
    for level in range(1, q.levels + 1):
        symbols = q.encode(latents, level)
        assert np.array_equal(symbols, full[: len(symbols)])
        errors.append(float(((q.decode(symbols, level) - latents) ** 2).mean()))
    assert all(b <= a for a, b in zip(errors, errors[1:]))  # a pass may code nothing
    assert errors[-1] < errors[0] / 20


def test_magnitudes_beyond_the_top_plane_are_coded_as_its_largest():
    q, latents, _ = _quantizer_and_tables()
    huge = latents * 1000
    symbols = q.encode(huge, q.levels)
    refine = np.array([k == PlaneTables.REFINE for _, _, k in PlaneTables.passes(q.planes, q.head, q.levels)])
    assert symbols.min() >= 0 and symbols[~refine].max() <= 2 and symbols[refine].max() <= 1
    back = q.decode(symbols, q.levels)
    assert back.abs().max() < 2 * q.top_step
    assert torch.equal(back.sign(), huge.sign() * (back != 0))


@pytest.mark.parametrize("level", [1, 2, 3, 4, 9, 16])
def test_plane_tables_round_trip_every_level(level):
    q, latents, tables = _quantizer_and_tables()
    symbols = q.encode(latents, level)[:, 1]
    chunks = tables.encode(symbols)
    assert len(chunks) == level == tables.level_of(chunks)
    assert np.array_equal(tables.decode(chunks, symbols.shape[1:]), symbols)


def test_balance_makes_a_unit_error_cost_alike_on_every_axis():
    """A linear synthesis whose axes weigh 1, 2 and 4: balancing scales them by their weight
    over the median's, so that a unit step costs the same through the synthesis."""
    q = LatticeRVQ(3)
    weights = torch.tensor([1.0, 2.0, 4.0])
    synthesis = torch.nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        synthesis.weight.copy_(torch.diag(weights)[:, :, None, None])
    scale = q.balance(synthesis, torch.randn(4, 3, 16, 16))
    assert torch.allclose(scale, weights / 2, rtol=0.05)
    z = torch.randn(5, 3)
    assert torch.allclose(q._from_space(q._to_space(z)), z, atol=1e-5)  # still a map and its inverse
    for axis in range(3):  # a unit step on each axis of the space moves the image alike
        step = torch.zeros(1, 3)
        step[0, axis] = 1.0
        moved = synthesis(q._from_space(step)[:, :, None, None]).square().sum()
        assert torch.isclose(moved, torch.tensor(4.0), rtol=0.1)


def test_context_coding_beats_one_table_per_channel():
    """Fitted on 40 images, tested on another: the neighbourhood classes must save bits."""
    torch.manual_seed(1)
    q = LatticeRVQ(4, planes=5, head=2, top_step=16.0)
    # a smooth scale field: busy and quiet regions, as in a latent
    scale = torch.nn.functional.interpolate(torch.rand(41, 1, 4, 4) ** 3 * 12, size=(16, 16), mode="bilinear")
    symbols = q.encode(torch.randn(41, 4, 16, 16) * scale, q.levels)
    train = [symbols[:, i] for i in range(40)]
    with_context = PlaneTables.fit(train, q.head)
    counts = with_context.significance.astype(np.float64).sum((2, 3), keepdims=True)  # one table per channel
    flat = counts * 65535 / counts.max(-1, keepdims=True)
    without = PlaneTables(np.broadcast_to(flat, with_context.significance.shape), with_context.refinement,
                          with_context.thresholds, with_context.head, PlaneTables.ORDER, with_context.partners)
    test = symbols[:, 40]
    assert sum(map(len, with_context.encode(test))) < 0.95 * sum(map(len, without.encode(test)))


def test_hostile_sections_are_clean_errors():
    q, latents, tables = _quantizer_and_tables()
    symbols = q.encode(latents, q.levels)[:, 0]
    chunks = tables.encode(symbols)
    shape = symbols.shape[1:]
    with pytest.raises(FormatError):
        tables.decode(chunks + [b"\0\0\0\0"], shape)  # more sections than the planes make
    with pytest.raises(FormatError):
        tables.decode([chunks[0][:-1]] + chunks[1:], shape)  # not whole words
    with pytest.raises(FormatError):
        tables.decode([chunks[0] + b"\1\2\3\4"] + chunks[1:], shape)  # words left over
    with pytest.raises(ValueError):
        tables.encode(symbols[:2])  # passes that do not fill the first section


def test_tables_reject_inconsistent_arrays():
    _, _, tables = _quantizer_and_tables()
    arrays = tables.arrays()
    with pytest.raises(ValueError):
        PlaneTables(**(arrays | {"thresholds": arrays["thresholds"][..., ::-1] - 1}))
    with pytest.raises(ValueError):
        PlaneTables(**(arrays | {"significance": arrays["significance"][:, :, :1]}))
    with pytest.raises(ValueError):
        PlaneTables(**(arrays | {"head": np.array([tables.planes + 1])}))
    too_many = np.zeros((tables.channels, PlaneTables.MATES + 1), dtype=np.int32)
    for partners in (arrays["partners"][:-1], too_many, arrays["partners"] + tables.channels, -arrays["partners"] - 1):
        with pytest.raises(ValueError, match="partners"):
            PlaneTables(**(arrays | {"partners": partners}))
    assert np.array_equal(PlaneTables(**arrays).significance, tables.significance)


def test_tables_of_an_earlier_coding_order_are_refused():
    """Tables saved before the checkerboard halves (no ``order``) would decode their files
    wrongly with today's order: refused, with what to do."""
    arrays = _quantizer_and_tables()[2].arrays()
    earlier = {k: v for k, v in arrays.items() if k != "order"}
    for bad in (earlier, arrays | {"order": np.array([1], dtype=np.int32)}):
        with pytest.raises(ValueError, match="coding order 1.*export the model again"):
            PlaneTables(**bad)


def test_partners_are_the_channels_whose_magnitudes_follow_most_closely():
    """Six channels in three pairs that share a scale field: each channel's first partner is
    its pair."""
    torch.manual_seed(4)
    q = LatticeRVQ(6, planes=6, head=2, top_step=32.0)
    fields = torch.rand(30, 3, 1, 1) * torch.rand(30, 3, 12, 12) * 20
    latents = torch.randn(30, 6, 12, 12) * fields.repeat_interleave(2, dim=1)
    symbols = q.encode(latents, q.levels)
    partners = PlaneTables.fit_partners([symbols[:, i] for i in range(30)])
    assert partners[:, 0].tolist() == [1, 0, 3, 2, 5, 4]


def test_second_half_of_a_pass_sees_the_first_halfs_decisions():
    """One plane, one channel: the far pass codes every coefficient, first where y + x is even.
    If (2, 2) becomes significant there, its second-half neighbour (2, 3) counts it in its
    activity, and a second-half coefficient away from it does not."""
    tables = PlaneTables(np.ones((1, 1, 4, 1, 3)), np.ones((1, 1, 3, 2)), np.zeros((1, 1, 4, 0), dtype=np.int64),
                         1, PlaneTables.ORDER, np.zeros((1, 2), dtype=np.int32))
    decisions = np.zeros((3, 1, 6, 6), dtype=np.int8)
    decisions[2, 0, 2, 2] = 1
    seen: dict[int, dict[int, int]] = {}

    def record(i, section, plane, side, coded, key):
        seen[side] = dict(zip(coded.tolist(), key.tolist()))
        return decisions[i]

    tables._steps(1, (1, 6, 6), record)
    far_first, far_second = seen[2 * 1 + 0], seen[2 * 1 + 1]
    assert 2 * 6 + 2 in far_first and 2 * 6 + 3 not in far_first
    assert far_second[2 * 6 + 3] > far_second[0 * 6 + 5] == far_first[2 * 6 + 2] == 1
