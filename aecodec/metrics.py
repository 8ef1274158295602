"""Image quality measures on 8-bit images, as the field reports them."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def psnr(reference: Image.Image, decoded: Image.Image) -> float:
    """PSNR in dB over all channels of two same-size images (255 peak), converted to RGB."""
    return psnr_arrays(np.asarray(reference.convert("RGB")), np.asarray(decoded.convert("RGB")))


def psnr_arrays(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two same-shape 8-bit arrays (255 peak)."""
    mse = float(np.mean((reference.astype(np.float64) - decoded) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def bpp(num_bytes: int, image: Image.Image) -> float:
    return 8 * num_bytes / (image.width * image.height)
