"""Context-coded VAE sections: tables chosen by the decoded neighbourhood, still bit-exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aecodec import bitstream
from aecodec.entropy import ContextTables, FactorizedTables, normalize_counts
from aecodec.errors import FormatError

from .conftest import smooth_image

CHANNELS, WIDTH = 6, 41


def _busy_and_flat(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    """Values (C, h, w) whose spread varies across the image (one busy quadrant) and is
    shared by all channels at a position: what a factorized table cannot see."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.add.outer(np.arange(h) < h // 2, np.arange(w) < w // 2) == 2, 6.0, 0.4)
    return np.clip(np.round(rng.laplace(0, 1, (CHANNELS, h, w)) * scale), -20, 20).astype(np.int32)


def _prior(levels: int = 2) -> FactorizedTables:
    """One Laplacian-ish table per channel and level over -20..20 (what a fitted prior gives)."""
    v = np.abs(np.arange(WIDTH) - WIDTH // 2)
    counts = np.broadcast_to((1e6 * 0.6 ** v).astype(np.int32), (levels, CHANNELS, WIDTH))
    return FactorizedTables(counts, np.full((levels, CHANNELS), -(WIDTH // 2), np.int32))


@pytest.fixture(scope="module")
def fitted() -> ContextTables:
    train = [_busy_and_flat(s)[None, None] for s in range(8)]
    return ContextTables.fit(_prior(), [train, train], classes=4)


def _bits(chunks: list[bytes]) -> int:
    return 8 * sum(len(c) for c in chunks)


def test_round_trip_and_gain_over_the_factorized_tables(fitted):
    for seed in (100, 101):
        values = _busy_and_flat(seed)[None]
        chunks = fitted.encode(values, 2)
        assert chunks[0][0] == 2 | ContextTables.MARK and fitted.level_of(chunks) == 2
        assert np.array_equal(fitted.decode(chunks, values.shape[1:]), values)
        assert _bits(chunks) < 0.85 * _bits(fitted.factorized().encode(values, 2))


def test_the_decoders_contexts_are_the_encoders():
    """The encoder computes every activity at once from all values; the decoder builds them
    as it goes. On odd sizes, extreme values and one-row images they must agree."""
    rng = np.random.default_rng(3)
    prior = _prior(1)
    tables = ContextTables.fit(prior, [[_busy_and_flat(s, 7, 9)[None, None] for s in range(3)]], classes=8)
    for h, w in ((1, 1), (1, 7), (5, 1), (7, 9)):
        values = rng.integers(-20, 21, (1, CHANNELS, h, w)).astype(np.int32)
        values[0, 0, 0, 0] = 20
        assert np.array_equal(tables.decode(tables.encode(values, 1), (CHANNELS, h, w)), values)


def test_a_class_training_never_saw_codes_with_the_prior(fitted):
    never = np.full((1, CHANNELS, 4, 4), 20, np.int32)  # busier than anything in training
    assert np.array_equal(fitted.decode(fitted.encode(never, 1), never.shape[1:]), never)


def test_factorized_sections_of_the_same_model_still_decode(fitted):
    values = _busy_and_flat(7)[None]
    assert np.array_equal(fitted.decode(fitted.factorized().encode(values, 1), values.shape[1:]), values)


def test_a_context_coded_section_needs_context_tables(fitted):
    values = _busy_and_flat(7)[None]
    plain = ContextTables(fitted.counts, fitted.offsets, fitted.widths)  # a file from before
    assert not plain.contextual and plain.encode(values, 1)[0][0] == 1
    with pytest.raises(FormatError, match="context-coded"):
        plain.decode(fitted.encode(values, 1), values.shape[1:])


def test_tables_are_integers_and_survive_saving(fitted):
    arrays = fitted.arrays()
    assert arrays["context_packed"].dtype == np.uint16 and arrays["thresholds"].dtype == np.int64
    again = ContextTables(**arrays)
    values = _busy_and_flat(9)[None]
    assert fitted.encode(values, 2) == again.encode(values, 2)


def test_mismatched_context_arrays_are_refused(fitted):
    a = fitted.arrays()
    with pytest.raises(ValueError, match="do not match their widths"):
        ContextTables(**(a | {"context_packed": a["context_packed"][:-1]}))
    with pytest.raises(ValueError, match="thresholds"):
        ContextTables(**(a | {"thresholds": a["thresholds"][..., ::-1] - np.arange(3)}))
    with pytest.raises(ValueError, match="thresholds"):
        ContextTables(**(a | {"thresholds": a["thresholds"][:1]}))


def test_each_class_table_is_the_normalised_counts(fitted):
    """What docs/FORMAT.md says the decoder uses: the uint16 rows, normalised as every table."""
    rows = fitted.context_rows(2, 3)
    assert rows.shape == (2 * fitted.classes, WIDTH)
    assert (normalize_counts(rows).sum(-1) == (1 << 24) - WIDTH).all()


def test_the_vae_codes_its_files_with_context(tiny_vae):
    data = tiny_vae.compress(smooth_image(40, 24), 2)
    section = bitstream.read(data).sections[0]
    assert tiny_vae.model.entropy.contextual and section[0] & ContextTables.MARK


def test_hostile_context_coded_sections_fail_cleanly(tiny_vae):
    data = tiny_vae.compress(smooth_image(40, 24), 2)
    f = bitstream.read(data)
    rng = np.random.default_rng(1)
    for n in (0, 3, 4, 8, 400):
        junk = bytes([2 | ContextTables.MARK]) + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        try:
            tiny_vae.decompress(bitstream.write(dataclasses.replace(f, sections=[junk])))
        except FormatError:
            pass
