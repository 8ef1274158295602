"""MS-SSIM as learned-compression papers report it, next to aecodec's own PSNR and bpp.

MS-SSIM comes from pytorch-msssim, the implementation CompressAI uses: 5 scales, 11x11 Gaussian
window (sigma 1.5), Wang et al.'s weights, computed per RGB channel on 0..255 values and averaged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ms_ssim as _ms_ssim

from aecodec.metrics import bpp, psnr

__all__ = ["bpp", "ms_ssim", "msssim_db", "psnr"]


def ms_ssim(reference: Image.Image, decoded: Image.Image) -> float:
    """MS-SSIM in [0, 1] of two same-size RGB images (needs sides over 160 px for 5 scales)."""
    x, y = (torch.from_numpy(np.array(img.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
            for img in (reference, decoded))
    return float(_ms_ssim(x, y, data_range=255.0))


def msssim_db(value: float) -> float:
    """-10 log10(1 - MS-SSIM): spreads out the values near 1 where codecs differ."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)
