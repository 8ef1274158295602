"""The .aec container refuses every damaged or hostile file with a FormatError or ModelError."""

from __future__ import annotations

import dataclasses
import time

import pytest

from aecodec import AecError, FormatError, ModelError, bitstream

from .conftest import smooth_image


@pytest.fixture(scope="module", params=["plain", "refined"])
def small_file(tiny, request):
    refine = 5 if request.param == "refined" else None
    return tiny.compress(smooth_image(40, 24, mode="RGBA"), 3, refine=refine)


def _rewrite(data: bytes, **changes) -> bytes:
    f = bitstream.read(data)
    return bitstream.write(dataclasses.replace(f, header=dataclasses.replace(f.header, **changes)))


def test_write_read_round_trip(small_file):
    assert bitstream.write(bitstream.read(small_file)) == small_file


def test_every_truncation_is_rejected_fast(tiny, small_file):
    for n in range(len(small_file)):
        t = time.perf_counter()
        with pytest.raises(FormatError):
            tiny.decompress(small_file[:n])
        assert time.perf_counter() - t < 0.1


def test_every_flipped_byte_is_rejected(tiny, small_file):
    for i in range(len(small_file)):
        bad = bytearray(small_file)
        bad[i] ^= 0x10
        with pytest.raises(AecError):
            tiny.decompress(bytes(bad))


def test_every_single_bit_flip_of_the_header_is_rejected_fast(tiny, small_file):
    f = bitstream.read(small_file)
    header_end = len(small_file) - sum(map(len, f.sections)) - len(f.alpha) - len(f.refinement or b"") - 4
    for i in range(header_end):
        for bit in range(8):
            bad = bytearray(small_file)
            bad[i] ^= 1 << bit
            t = time.perf_counter()
            with pytest.raises(AecError):
                tiny.decompress(bytes(bad))
            assert time.perf_counter() - t < 0.1


def test_random_bytes_are_rejected_fast(tiny):
    import random

    rng = random.Random(0)
    for n in [0, 1, 3, 4, 7, 30, 100, 1000] * 10:
        blob = bytes(rng.getrandbits(8) for _ in range(n))
        t = time.perf_counter()
        with pytest.raises(FormatError):
            tiny.decompress(blob)
        assert time.perf_counter() - t < 0.1


def test_wrong_magic(tiny, small_file):
    with pytest.raises(FormatError, match="magic"):
        tiny.decompress(b"GIF8" + small_file[4:])


def test_future_version(tiny, small_file):
    bad = bytearray(small_file)
    bad[4] = bitstream.VERSION + 1
    with pytest.raises(FormatError, match=f"version {bitstream.VERSION + 1} is not supported"):
        tiny.decompress(bytes(bad))


def test_fingerprint_mismatch(tiny, small_file):
    with pytest.raises(ModelError, match="other weights"):
        tiny.decompress(_rewrite(small_file, fingerprint=b"\0" * 8))


def test_other_model_name(tiny, small_file):
    with pytest.raises(ModelError, match="encoded with model 'other'"):
        tiny.decompress(_rewrite(small_file, model="other"))


def test_absurd_size_is_refused_before_allocation(tiny, small_file):
    with pytest.raises(FormatError, match="100000x100000"):
        tiny.decompress(_rewrite(small_file, width=100000, height=100000))


def test_more_stages_than_the_model_has(tiny, small_file):
    f = bitstream.read(small_file)
    more = dataclasses.replace(f, header=dataclasses.replace(f.header, sections=9), sections=f.sections * 3)
    with pytest.raises(FormatError, match="9 sections"):
        tiny.decompress(bitstream.write(more))


def test_trailing_bytes(tiny, small_file):
    with pytest.raises(FormatError, match="trailing"):
        tiny.decompress(small_file + b"\0")


def test_garbage_sections_with_valid_checksums(tiny, small_file):
    """A hostile file can carry valid CRCs; the entropy decoder must still fail cleanly."""
    f = bitstream.read(small_file)
    junk = dataclasses.replace(f, sections=[b"\xff\xff\xff\xff" * 3] * len(f.sections))
    with pytest.raises(FormatError):
        tiny.decompress(bitstream.write(junk))


def test_alpha_bomb_is_bounded(tiny, small_file):
    import zlib

    f = bitstream.read(small_file)
    bomb = dataclasses.replace(f, alpha=zlib.compress(b"\0" * 10_000_000))
    with pytest.raises(FormatError, match="alpha"):
        tiny.decompress(bitstream.write(bomb))
