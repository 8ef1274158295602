"""Bjontegaard deltas between two rate-distortion curves, and reading a curve at a fixed rate.

One number per codec pair is how the field compares codecs (VCEG-M33): fit each curve with a
cubic polynomial, log-rate against quality (or quality against log-rate), and average the gap
between the fits over the quality (or rate) range that both curves cover. Extrapolating beyond
that range would compare a codec against a guess, so a pair that does not overlap gives NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import Polynomial
from numpy.typing import ArrayLike

DEGREE = 3
"""Bjontegaard's cubic; curves with fewer than four points get the highest degree they support."""


def bd_rate(rate_anchor: ArrayLike, quality_anchor: ArrayLike,
            rate_test: ArrayLike, quality_test: ArrayLike) -> float:
    """Average rate change of ``test`` against ``anchor`` at equal quality, as a fraction
    (-0.2 = test needs 20 % fewer bits); NaN if the quality ranges do not overlap."""
    gap = _mean_gap(quality_anchor, np.log(rate_anchor), quality_test, np.log(rate_test))
    return math.expm1(gap)


def bd_quality(rate_anchor: ArrayLike, quality_anchor: ArrayLike,
               rate_test: ArrayLike, quality_test: ArrayLike) -> float:
    """Average quality change (e.g. BD-PSNR in dB) of ``test`` against ``anchor`` at equal
    rate; NaN if the rate ranges do not overlap."""
    return _mean_gap(np.log(rate_anchor), quality_anchor, np.log(rate_test), quality_test)


def value_at(rate: ArrayLike, values: ArrayLike, target: float) -> float:
    """``values`` interpolated at ``target`` rate, linearly in log-rate (the scale on which RD
    curves are near straight); NaN outside the measured rates rather than an extrapolation."""
    r = np.asarray(rate, dtype=np.float64)
    if r.size == 0 or not r.min() <= target <= r.max():
        return math.nan
    order = np.argsort(r)
    return float(np.interp(math.log(target), np.log(r[order]), np.asarray(values, np.float64)[order]))


def _mean_gap(x_a: ArrayLike, y_a: ArrayLike, x_b: ArrayLike, y_b: ArrayLike) -> float:
    """Mean of fit_b(x) - fit_a(x) over the x range both curves cover."""
    x_a, y_a, x_b, y_b = (np.asarray(v, dtype=np.float64) for v in (x_a, y_a, x_b, y_b))
    if len(x_a) < 2 or len(x_b) < 2:
        return math.nan
    lo, hi = max(x_a.min(), x_b.min()), min(x_a.max(), x_b.max())
    if not hi > lo:
        return math.nan
    area_a, area_b = (_integral(x, y, lo, hi) for x, y in ((x_a, y_a), (x_b, y_b)))
    return (area_b - area_a) / (hi - lo)


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    # Polynomial.fit maps x onto [-1, 1] first, which keeps a cubic in PSNR (x ~ 30) well conditioned.
    antiderivative = Polynomial.fit(x, y, min(DEGREE, len(x) - 1)).integ()
    return float(antiderivative(hi) - antiderivative(lo))
