"""Speed and memory of the codec, measured with pytest-benchmark:

    pytest benchmarks/test_speed.py --benchmark-only --benchmark-json=benchmarks/results/speed.json

then ``python -m benchmarks.rd ...`` summarises that file in RESULTS.md. The image is
Kodak-sized (768x512): the bundled sample (a Kodak crop) scaled up 2x, so the suite needs
nothing outside the package. Under plain ``pytest`` each case runs once as a correctness test.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import aecodec
from aecodec.codec import SAMPLE

PIXELS = 768 * 512


@pytest.fixture(scope="module")
def kodak_size() -> Image.Image:
    with Image.open(SAMPLE) as img:
        return img.convert("RGB").resize((768, 512), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def codec():
    return aecodec.load("rvq")


def _rate(benchmark, amount: float, unit: str) -> None:
    benchmark.extra_info[unit] = amount / benchmark.stats["mean"] if benchmark.stats else None


def test_encode_decode_default_quality(benchmark, codec, kodak_size):
    """Issue 3's budget: encode + decode of one Kodak image under 2 s on 2 cores."""
    out = benchmark(lambda: codec.decompress(codec.compress(kodak_size)))
    assert out.size == kodak_size.size


def test_encode_default_quality(benchmark, codec, kodak_size):
    data = benchmark(codec.compress, kodak_size)
    _rate(benchmark, PIXELS / 1e6, "megapixels_per_s")
    assert data[:4] == b"\x89AEC"


def test_decode_default_quality(benchmark, codec, kodak_size):
    data = codec.compress(kodak_size)
    out = benchmark(codec.decompress, data)
    _rate(benchmark, PIXELS / 1e6, "megapixels_per_s")
    assert out.size == kodak_size.size


@pytest.fixture(scope="module")
def vae():
    return aecodec.load("vae")


@pytest.mark.parametrize("tables", ["context", "factorized"])
def test_decode_vae_default_quality(benchmark, vae, kodak_size, tables):
    """The vae's decoding with its context tables and, for scale, with its factorized ones."""
    from .context import factorized

    codec = vae if tables == "context" else factorized(vae)
    data = codec.compress(kodak_size)
    out = benchmark(codec.decompress, data)
    _rate(benchmark, PIXELS / 1e6, "megapixels_per_s")
    assert out.size == kodak_size.size


def test_entropy_coder_alone(benchmark, codec, kodak_size):
    """Encode + decode of every section of a Kodak image's symbols at the top quality: the
    entropy coder without the transforms."""
    model = codec.model
    pixels = torch.from_numpy(np.array(kodak_size)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        symbols = model.symbols(model.analyse(pixels), model.bottleneck.levels)[:, 0]
    entropy = model.entropy
    out = benchmark(lambda: entropy.decode(entropy.encode(symbols), symbols.shape[1:]))
    _rate(benchmark, symbols.size / 1e6, "million_symbols_per_s")
    assert np.array_equal(out, symbols)


@pytest.fixture(scope="module")
def sixteen(kodak_size) -> list[Image.Image]:
    return [kodak_size.rotate(180 * (i % 2)).transpose(Image.Transpose.FLIP_LEFT_RIGHT if i % 3 else
                                                       Image.Transpose.FLIP_TOP_BOTTOM) for i in range(16)]


def test_batch_of_16_through_compress_batch(benchmark, codec, sixteen):
    blobs = benchmark.pedantic(codec.compress_batch, (sixteen,), rounds=2, iterations=1)
    _rate(benchmark, 16 * PIXELS / 1e6, "megapixels_per_s")
    assert len(blobs) == 16


def test_batch_of_16_one_at_a_time(benchmark, codec, sixteen):
    blobs = benchmark.pedantic(lambda: [codec.compress(i) for i in sixteen], rounds=2, iterations=1)
    _rate(benchmark, 16 * PIXELS / 1e6, "megapixels_per_s")
    assert len(blobs) == 16


@pytest.mark.parametrize("fmt, options", [("JPEG", {"quality": 75}), ("WEBP", {"quality": 75, "method": 6})])
def test_pillow_for_scale(benchmark, kodak_size, fmt, options):
    def round_trip() -> Image.Image:
        buf = io.BytesIO()
        kodak_size.save(buf, fmt, **options)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    assert benchmark(round_trip).size == kodak_size.size
    _rate(benchmark, PIXELS / 1e6, "megapixels_per_s")


PEAK_RSS = """
import re, aecodec
from PIL import Image
def high_water_kb():  # VmHWM is reset by exec, unlike getrusage's ru_maxrss
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
img = Image.open(aecodec.codec.SAMPLE).convert("RGB").resize((4096, 4096))
codec = aecodec.load("rvq")
before = high_water_kb()
data = codec.compress(img)
print(before, high_water_kb(), len(data))
"""


def test_peak_memory_encoding_4096_square(benchmark):
    """Peak RSS of a fresh process encoding a 4096x4096 image (tiled transforms)."""
    def run() -> list[int]:
        out = subprocess.run([sys.executable, "-c", PEAK_RSS], capture_output=True, text=True, check=True)
        return [int(v) for v in out.stdout.split()]

    before_kb, peak_kb, size = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = peak_kb / 1024
    benchmark.extra_info["rss_before_encode_mb"] = before_kb / 1024  # torch, model and image loaded
    assert size > 0 and peak_kb < 3 * 1024 * 1024
