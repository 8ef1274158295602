"""Image quality measures on 8-bit images, as the field reports them."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def psnr(reference: Image.Image, decoded: Image.Image) -> float:
    """PSNR in dB over all channels of two same-size images (255 peak), converted to RGB."""
    a = np.asarray(reference.convert("RGB"), dtype=np.float64)
    b = np.asarray(decoded.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bpp(num_bytes: int, image: Image.Image) -> float:
    return 8 * num_bytes / (image.width * image.height)
