"""Bjontegaard deltas on curves whose answer is known in closed form, and on a real JPEG curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from aecodec.bd import bd_quality, bd_rate, value_at
from aecodec.metrics import bpp, psnr
from benchmarks.codecs import ANCHOR, classical_codecs

RATE = np.array([0.1, 0.2, 0.35, 0.6, 1.0, 1.6, 2.5])
PSNR = 36 + 4.5 * np.log(RATE) - 0.4 * np.log(RATE) ** 2  # concave in log-rate, like real codecs


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.3, 2.0])
def test_rate_scaled_by_a_constant_is_that_constant(factor: float) -> None:
    assert bd_rate(RATE, PSNR, factor * RATE, PSNR) == pytest.approx(factor - 1, abs=1e-9)


@pytest.mark.parametrize("shift", [-1.5, 0.0, 0.25, 2.0])
def test_psnr_shift_is_the_bd_psnr(shift: float) -> None:
    assert bd_quality(RATE, PSNR, RATE, PSNR + shift) == pytest.approx(shift, abs=1e-9)


def test_psnr_shift_of_a_log_linear_curve_is_a_constant_rate_factor() -> None:
    # PSNR = a + b ln(R): a curve shifted up by d dB needs exp(-d / b) times the rate everywhere.
    a, b, d = 30.0, 5.0, 1.2
    rate_a, rate_b = np.geomspace(0.1, 2.0, 6), np.geomspace(0.3, 4.0, 5)
    quality_a, quality_b = a + b * np.log(rate_a), a + d + b * np.log(rate_b)
    assert bd_rate(rate_a, quality_a, rate_b, quality_b) == pytest.approx(math.exp(-d / b) - 1, abs=1e-9)
    assert bd_quality(rate_a, quality_a, rate_b, quality_b) == pytest.approx(d, abs=1e-9)


def test_partial_overlap_averages_only_where_both_curves_are() -> None:
    # ln R_b - ln R_a = k (Q - 30) on B's range [30, 40]: its mean there is 5 k, while over A's
    # whole range [20, 40] it would be 0.
    def log_rate(q: np.ndarray) -> np.ndarray:
        return -6 + 0.2 * q + 0.001 * (q - 30) ** 3

    k, q_a, q_b = 0.03, np.linspace(20, 40, 9), np.linspace(30, 40, 6)
    result = bd_rate(np.exp(log_rate(q_a)), q_a, np.exp(log_rate(q_b) + k * (q_b - 30)), q_b)
    assert result == pytest.approx(math.expm1(5 * k), abs=1e-9)


def test_swapping_anchor_and_test_inverts_the_rate_ratio() -> None:
    other = 0.7 * RATE ** 1.1
    forward, backward = bd_rate(RATE, PSNR, other, PSNR), bd_rate(other, PSNR, RATE, PSNR)
    assert (1 + forward) * (1 + backward) == pytest.approx(1, abs=1e-9)


def test_curves_that_do_not_overlap_have_no_delta() -> None:
    assert math.isnan(bd_rate(RATE, PSNR, RATE, PSNR + 50))
    assert math.isnan(bd_quality(RATE, PSNR, RATE * 100, PSNR))


def test_jpeg_against_itself_is_zero() -> None:
    jpeg = next(c for c in classical_codecs() if c.name == ANCHOR)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:192, 0:192]
    pixels = np.stack([x, y, (x + y) // 2], axis=-1) + rng.normal(0, 12, (192, 192, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    files = [jpeg.encode(image, p) for p in jpeg.points()]
    rate = [bpp(len(f), image) for f in files]
    quality = [psnr(image, jpeg.decode(f)) for f in files]
    assert bd_rate(rate, quality, rate, quality) == 0
    assert bd_quality(rate, quality, rate, quality) == 0


def test_value_at_interpolates_in_log_rate_and_never_extrapolates() -> None:
    assert value_at(RATE, PSNR, 0.6) == pytest.approx(PSNR[3])
    midway = math.sqrt(0.6 * 1.0)  # halfway between two points in log-rate
    assert value_at(RATE, PSNR, midway) == pytest.approx((PSNR[3] + PSNR[4]) / 2)
    assert value_at(RATE[::-1], PSNR[::-1], midway) == pytest.approx((PSNR[3] + PSNR[4]) / 2)
    assert math.isnan(value_at(RATE, PSNR, 0.05)) and math.isnan(value_at(RATE, PSNR, 3.0))
