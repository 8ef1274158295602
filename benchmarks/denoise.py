"""Denoising benchmark: each image with Gaussian noise added (sigma 15 and 25 of 255) is coded by
the denoising model, by the plain model and by Pillow JPEG 4:2:0; each decoded image is scored
against the clean original, at the bpp of its file.

    python -m benchmarks.denoise --dataset ../shared/data/kodak [--models denoise,rvq]

The noise is seeded per image and sigma, added to 8-bit RGB, then rounded and clipped (a noisy
photo file). The plain model's and JPEG's PSNR at the denoising model's bpp are interpolated
linearly in log bpp on their own curves; BD-PSNR averages that gap over the rates both curves
cover. Writes benchmarks/results/denoise.json and .md.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec
from aecodec.bd import bd_quality
from aecodec.metrics import bpp, psnr

from .kodak_roundtrip import interpolate, save

SIGMAS = (15, 25)


def noisy(img: Image.Image, sigma: float, seed: int) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    arr = arr + np.random.default_rng(seed).normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB")


def _jpeg(img: Image.Image, quality: int) -> tuple[int, Image.Image]:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return buf.tell(), Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def curve(clean: list[Image.Image], inputs: list[Image.Image], points, code) -> list[tuple[float, float]]:
    """(mean bpp, mean PSNR against the clean image) at each point; ``code(img, point)`` gives
    (bytes, decoded image)."""
    out = []
    for point in points:
        coded = [code(x, point) for x in inputs]
        out.append((float(np.mean([bpp(n, c) for (n, _), c in zip(coded, clean)])),
                    float(np.mean([psnr(c, d) for (_, d), c in zip(coded, clean)]))))
    return out


def run(dataset: Path, models: list[str]) -> dict:
    files = sorted(dataset.glob("*.png"))
    clean = [Image.open(f).convert("RGB") for f in files]
    codecs = dict(zip(_labels(loaded := [aecodec.load(m) for m in models]), loaded))
    result: dict = {"images": len(files), "models": {label: c.fingerprint.hex() for label, c in codecs.items()},
                    "sigmas": {}}
    for sigma in SIGMAS:
        inputs = [noisy(img, sigma, 1000 * sigma + i) for i, img in enumerate(clean)]
        curves: dict[str, list[tuple[float, float]]] = {}
        for label, c in codecs.items():
            def code(x: Image.Image, q: int, c=c) -> tuple[int, Image.Image]:
                data = c.compress(x, q)
                return len(data), c.decompress(data)
            curves[label] = curve(clean, inputs, c.quality_levels, code)
            print(f"sigma {sigma}: {label} done", file=sys.stderr)
        curves["JPEG 4:2:0"] = curve(clean, inputs, range(5, 100, 5), _jpeg)
        result["sigmas"][sigma] = {"input_psnr": float(np.mean([psnr(c, x) for c, x in zip(clean, inputs)])),
                                   "curves": curves}
    return result


def _labels(codecs: list[aecodec.Codec]) -> list[str]:
    """Each model's name, with its fingerprint where two share a name (a candidate file beside
    the shipped model it would replace), so neither curve overwrites the other."""
    names = [c.name for c in codecs]
    return [c.name if names.count(c.name) == 1 else f"{c.name} {c.fingerprint.hex()[:8]}" for c in codecs]


def markdown(result: dict) -> str:
    names = list(result["models"])
    first, others = names[0], [*names[1:], "JPEG 4:2:0"]
    lines = []
    for sigma, entry in result["sigmas"].items():
        curves = entry["curves"]
        lines += [f"\nNoise sigma {sigma}: the noisy input itself scores {entry['input_psnr']:.2f} dB "
                  "against the clean image.\n",
                  f"| {first} quality | bpp | PSNR vs clean (dB) | " + " | ".join(f"{o} at same bpp" for o in others) + " |",
                  "|---" * (3 + len(others)) + "|"]
        for q, (rate, score) in enumerate(curves[first], 1):
            cells = []
            for o in others:
                ref = interpolate(curves[o], rate)
                cells.append("out of its range" if ref is None else f"{ref:.2f} ({score - ref:+.2f})")
            lines.append(f"| {q} | {rate:.3f} | {score:.2f} | " + " | ".join(cells) + " |")
        # BD-PSNR (quality at equal rate) only: against a clean target, more bits can mean a
        # worse image (JPEG codes the noise), and BD-rate's fit of rate against PSNR needs a
        # curve that rises
        lines.append("\nAveraged over the rates both curves cover (BD-PSNR, `aecodec.bd`): " + "; ".join(
            f"against {o}, {_bd_psnr(curves[o], curves[first])}" for o in others) + ".")
    return "\n".join(lines).lstrip("\n")


def _bd_psnr(anchor: list, test: list) -> str:
    value = bd_quality(*zip(*anchor), *zip(*test))
    return "no overlap" if math.isnan(value) else f"{value:+.2f} dB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--models", default="denoise,rvq", help="comma list; the first is tabulated against the rest")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "denoise.json")
    args = parser.parse_args()
    save(args.out, run(args.dataset, args.models.split(",")), markdown)


if __name__ == "__main__":
    main()
