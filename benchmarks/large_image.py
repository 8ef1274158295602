"""Peak memory and seams of a large image: round-trip an 8000x6000 photo and report peak RSS,
time, and PSNR of the pixels next to tile borders against all other pixels.

    python -m benchmarks.large_image [--width 8000 --height 6000 --quality 4] [--mosaic DIR]

The image is the bundled sample (a Kodak crop) mirror-tiled to the requested size, or with
``--mosaic`` a mosaic of the photos in a folder, so it has photographic texture everywhere,
including across the transforms' tile borders. Peak RSS is read right after decoding, before
the PSNR bookkeeping (which needs float copies of the whole image).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import aecodec
from aecodec import imageio, transforms
from aecodec.codec import SAMPLE


def mirror_tiled(width: int, height: int) -> Image.Image:
    with Image.open(SAMPLE) as s:
        tile = s.convert("RGB")
    pair = Image.new("RGB", (tile.width * 2, tile.height * 2))
    pair.paste(tile, (0, 0))
    pair.paste(ImageOps.mirror(tile), (tile.width, 0))
    pair.paste(ImageOps.flip(tile), (0, tile.height))
    pair.paste(ImageOps.flip(ImageOps.mirror(tile)), (tile.width, tile.height))
    out = Image.new("RGB", (width, height))
    # offset so the pattern's own mirror seams never line up with the transforms' tile borders
    for y in range(-101, height, pair.height):
        for x in range(-173, width, pair.width):
            out.paste(pair, (x, y))
    return out


def mosaic(width: int, height: int, folder: Path) -> Image.Image:
    """Photos of ``folder`` laid edge to edge (cycling), shifted so their edges never line up
    with the transforms' tile borders: real, non-repeating content across every border."""
    photos = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]
    out, k = Image.new("RGB", (width, height)), 0
    for y in range(-101, height, photos[0].height):
        for x in range(-173, width, photos[0].width):
            out.paste(photos[k % len(photos)], (x, y))
            k += 1
    return out


def border_mask(height: int, width: int, band: int = 8) -> np.ndarray:
    """Pixels within ``band`` of an internal tile border of the synthesis transform."""
    mask = np.zeros((height, width), dtype=bool)
    for y in range(transforms.TILE, height, transforms.TILE):
        mask[max(y - band, 0) : y + band] = True
    for x in range(transforms.TILE, width, transforms.TILE):
        mask[:, max(x - band, 0) : x + band] = True
    return mask


def psnr_where(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = np.mean((a[mask].astype(np.float64) - b[mask]) ** 2)
    return float(10 * np.log10(255**2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--quality", type=int, default=None)
    parser.add_argument("--mosaic", type=Path, default=None,
                        help="build the image from the PNG photos of this folder instead of the sample")
    args = parser.parse_args()
    image = mosaic(args.width, args.height, args.mosaic) if args.mosaic else mirror_tiled(args.width, args.height)
    codec = aecodec.load("rvq")
    # a file this size is refused by default (a hostile header could ask for it); this one is ours
    imageio.MAX_DECODE_PIXELS = max(imageio.MAX_DECODE_PIXELS, args.width * args.height)
    t = time.perf_counter()
    data = codec.compress(image, args.quality)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    decoded = codec.decompress(data)
    decode_s = time.perf_counter() - t
    a, b = np.asarray(image), np.asarray(decoded)
    mask = border_mask(args.height, args.width)
    result = {
        "size": f"{args.width}x{args.height}",
        "bpp": 8 * len(data) / (args.width * args.height),
        "encode_s": round(encode_s, 1),
        "decode_s": round(decode_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "psnr_tile_borders": round(psnr_where(a, b, mask), 2),
        "psnr_elsewhere": round(psnr_where(a, b, ~mask), 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
