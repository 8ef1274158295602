"""Per-image records averaged into one rate-distortion curve per codec.

Like CompressAI, each point averages bpp, PSNR and MS-SSIM over the images (PSNR per image
first, then the mean), and MS-SSIM in dB is taken of the mean MS-SSIM. A point missing on some
image would average a different set of images than its neighbours, so it is left out.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .measure import Record
from .metrics import msssim_db


@dataclass
class Curve:
    codec: str
    points: list[str]
    images: int
    bpp: np.ndarray
    psnr: np.ndarray
    msssim: np.ndarray
    encode_s: np.ndarray
    decode_s: np.ndarray

    @property
    def msssim_db(self) -> np.ndarray:
        return np.array([msssim_db(v) for v in self.msssim])

    def to_json(self) -> dict:
        """CompressAI's results layout, so its plotting tools read it too."""
        return {"name": self.codec, "images": self.images, "results": {
            "point": self.points, "bpp": self.bpp.tolist(), "psnr-rgb": self.psnr.tolist(),
            "ms-ssim-rgb": self.msssim.tolist(), "encoding_time": self.encode_s.tolist(),
            "decoding_time": self.decode_s.tolist()}}


def average_curves(records: Iterable[Record], images: int) -> list[Curve]:
    """One curve per codec (in order of first appearance), points sorted by rate; only points
    measured on all ``images`` images."""
    by_point: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_point[r.codec][r.point].append(r)
    curves = []
    for codec, points in by_point.items():
        complete = {p: rs for p, rs in points.items() if len(rs) == images}
        if len(complete) < len(points):
            warnings.warn(f"{codec}: {sorted(set(points) - set(complete))} not measured on every "
                          f"image, left out of the average", stacklevel=2)
        if not complete:
            continue
        mean = {p: {f: float(np.mean([getattr(r, f) for r in rs]))
                    for f in ("bpp", "psnr", "msssim", "encode_s", "decode_s")} for p, rs in complete.items()}
        order = sorted(mean, key=lambda p: mean[p]["bpp"])
        columns = {f: np.array([mean[p][f] for p in order]) for f in next(iter(mean.values()))}
        curves.append(Curve(codec, order, images, **columns))
    return curves
