"""One measurement: a codec at one operating point on one image, timed and scored."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .codecs import BenchCodec, Params, point_label
from .dataset import ImageFile, load_rgb
from .metrics import bpp, ms_ssim, psnr


@dataclass
class Record:
    codec: str
    point: str
    params: Params
    image: str
    sha256: str
    width: int
    height: int
    bytes: int
    bpp: float
    psnr: float
    msssim: float
    encode_s: float
    decode_s: float


def measure(codec: BenchCodec, params: Params, image: ImageFile) -> Record:
    """Encode to a complete file (its size is the rate), decode it back, and score the result
    against the original. Times are wall-clock, in this process, of that one call each."""
    original = load_rgb(image.path)
    start = time.perf_counter()
    data = codec.encode(original, params)
    encoded = time.perf_counter()
    decoded = codec.decode(data)
    decoded_at = time.perf_counter()
    if decoded.size != original.size:
        raise ValueError(f"{codec.name} {point_label(params)}: decoded {decoded.size}, expected {original.size}")
    return Record(
        codec=codec.name, point=point_label(params), params=params, image=image.name, sha256=image.sha256,
        width=original.width, height=original.height, bytes=len(data), bpp=bpp(len(data), original),
        psnr=psnr(original, decoded), msssim=ms_ssim(original, decoded),
        encode_s=encoded - start, decode_s=decoded_at - encoded,
    )
