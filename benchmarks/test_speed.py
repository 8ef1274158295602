"""Speed of the codec, measured with pytest-benchmark (``pytest benchmarks/ --benchmark-only``).

The image is Kodak-sized (768x512): the bundled sample (a Kodak crop) scaled up 2x, so the suite
needs nothing outside the package.
"""

from __future__ import annotations

import pytest
from PIL import Image

import aecodec
from aecodec.codec import SAMPLE


@pytest.fixture(scope="module")
def kodak_size() -> Image.Image:
    with Image.open(SAMPLE) as img:
        return img.convert("RGB").resize((768, 512), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def codec():
    return aecodec.load("rvq")


def test_encode_decode_default_quality(benchmark, codec, kodak_size):
    """Issue 3's budget: encode + decode of one Kodak image under 2 s on 2 cores."""
    out = benchmark(lambda: codec.decompress(codec.compress(kodak_size)))
    assert out.size == kodak_size.size


def test_encode_default_quality(benchmark, codec, kodak_size):
    data = benchmark(codec.compress, kodak_size)
    benchmark.extra_info["megapixels_per_s"] = 768 * 512 / 1e6 / benchmark.stats["mean"]
    assert data[:4] == b"\x89AEC"


def test_decode_default_quality(benchmark, codec, kodak_size):
    data = codec.compress(kodak_size)
    out = benchmark(codec.decompress, data)
    benchmark.extra_info["megapixels_per_s"] = 768 * 512 / 1e6 / benchmark.stats["mean"]
    assert out.size == kodak_size.size
