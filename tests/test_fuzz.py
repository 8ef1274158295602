"""Property tests: mutated and random files fail with the codec's own errors, quickly.

A short run lives in the suite; a long one is ``HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aecodec import AecError

from .conftest import build_tiny_model, smooth_image

settings.register_profile("long", max_examples=20000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_codecs: dict = {}


def _tiny(bottleneck: str = "rvq"):
    if bottleneck not in _codecs:
        from aecodec.codec import Codec

        codec = _codecs[bottleneck] = Codec(build_tiny_model(bottleneck=bottleneck))
        codec.valid = codec.compress(smooth_image(40, 24, mode="RGBA"), 4, refine=7)
    return _codecs[bottleneck]


def _decode_or_clean_error(data: bytes, bottleneck: str = "rvq") -> None:
    codec = _tiny(bottleneck)
    t = time.perf_counter()
    try:
        codec.decompress(data)
    except AecError:
        pass
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("bottleneck", ["rvq", "lattice", "vae", "sparse"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files(bottleneck, data):
    valid = bytearray(_tiny(bottleneck).valid)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        i = data.draw(st.integers(0, max(len(valid) - 1, 0)))
        if kind == "flip" and valid:
            valid[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and valid:
            valid[i] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del valid[i:]
        elif kind == "insert":
            valid[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del valid[i : i + data.draw(st.integers(1, 8))]
    _decode_or_clean_error(bytes(valid), bottleneck)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(blob):
    _decode_or_clean_error(blob)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_after_a_valid_magic(blob):
    _decode_or_clean_error(b"\x89AEC\x01" + blob)


@pytest.mark.parametrize("bottleneck", ["rvq", "lattice", "vae", "sparse"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_well_formed_files_with_hostile_contents(bottleneck, data):
    """Valid checksums around hostile fields and payloads reach the entropy decoder itself
    (for the VAE, mostly behind a valid level byte)."""
    import dataclasses

    from aecodec import bitstream

    f = bitstream.read(_tiny(bottleneck).valid)
    n = data.draw(st.integers(1, 6)) if bottleneck in ("rvq", "lattice") else 1  # the others: one section
    header = dataclasses.replace(
        f.header,
        width=data.draw(st.integers(1, 300)),
        height=data.draw(st.integers(1, 300)),
        sections=n,
    )
    sections = [data.draw(st.binary(max_size=64)) for _ in range(n)]
    if bottleneck not in ("rvq", "lattice") and data.draw(st.booleans()):
        sections = [bytes([data.draw(st.integers(1, 4))]) + sections[0]]
    alpha = data.draw(st.one_of(st.none(), st.binary(max_size=64)))
    refinement = data.draw(st.one_of(st.none(), st.binary(max_size=200)))
    mode = "RGBA" if alpha is not None else data.draw(st.sampled_from(["L", "RGB"]))
    hostile = bitstream.AecFile(dataclasses.replace(header, mode=mode), sections, alpha, refinement)
    _decode_or_clean_error(bitstream.write(hostile), bottleneck)
