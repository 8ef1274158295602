"""Same-rate crops: each codec's setting whose file for one image comes nearest a target rate,
decoded and cropped, so that a reader compares artifacts at equal cost."""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image

from .codecs import BenchCodec, point_label
from .metrics import bpp, psnr


def nearest_rate(codec: BenchCodec, image: Image.Image, target_bpp: float) -> tuple[str, bytes]:
    """The label and file of the ``codec`` setting nearest ``target_bpp`` on ``image`` (in
    log-rate), by bisection over its fine points: file size grows with the setting."""
    candidates = codec.fine_points()
    files: dict[int, bytes] = {}

    def rate(i: int) -> float:
        if i not in files:
            files[i] = codec.encode(image, candidates[i])
        return bpp(len(files[i]), image)

    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # first candidate at or above the target, else the last
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if rate(mid) < target_bpp else (lo, mid)
    best = min({max(lo - 1, 0), lo}, key=lambda i: abs(math.log(rate(i) / target_bpp)))
    return point_label(candidates[best]), files[best]


def crop_panels(codecs: Sequence[BenchCodec], image: Image.Image, target_bpp: float,
                size: int) -> list[tuple[str, Image.Image]]:
    """The original and each codec near ``target_bpp``, titled, as centre crops of ``size``."""
    left, top = (image.width - size) // 2, (image.height - size) // 2
    box = (left, top, left + size, top + size)
    panels = [("original", image.crop(box))]
    for codec in codecs:
        label, data = nearest_rate(codec, image, target_bpp)
        decoded = codec.decode(data)
        title = f"{codec.name} ({label})\n{bpp(len(data), image):.3f} bpp, {psnr(image, decoded):.2f} dB"
        panels.append((title, decoded.crop(box)))
    return panels
