"""What the sparse and contractive training do to the code, measured on a folder of images.

    python -m benchmarks.codes --dataset ../shared/data/kodak

* Sparsity: for each model (default: vae, sparse) and quality, the fraction of latent values
  that are zero, and the bytes of the coded latent, as the model codes it and as a plain
  factorized prior would code the same values (for the sparse model, what its significance map
  saves).
* Stability: for each model (default: vae, contractive) and quality, the fraction of latent
  values that change when each image gets Gaussian noise of sigma 1 and 2 (8-bit levels,
  seeded), a direct measure of how contractive the encoder is where it matters: in the code.

Writes benchmarks/results/codes.json and .md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import aecodec
from aecodec.entropy import FactorizedTables
from aecodec.imageio import pad_to_stride, to_planes
from aecodec.transforms import STRIDE, analyse

from .denoise import noisy
from .kodak_roundtrip import save

NOISE = (1, 2)


@torch.inference_mode()
def latent(codec: aecodec.Codec, img: Image.Image) -> torch.Tensor:
    return analyse(codec.model.analyse, pad_to_stride(to_planes(img).rgb[None], STRIDE))


def sparsity(codec: aecodec.Codec, images: list[Image.Image]) -> list[dict]:
    rows = []
    entropy = codec.model.entropy
    plain = entropy.factorized() if hasattr(entropy, "factorized") else entropy
    if not isinstance(plain, FactorizedTables):
        raise SystemExit(f"model {codec.name} has no scalar latent")
    latents = [latent(codec, img) for img in images]
    for q in codec.quality_levels:
        level = codec.levels_per_quality[q - 1]
        zeros, coded, factorized, pixels = [], 0, 0, 0
        for img, lat in zip(images, latents):
            v = codec.model.symbols(lat, level)[:, 0]
            zeros.append(float(np.mean(v == 0)))
            coded += len(entropy.encode(v, level)[0])
            factorized += len(plain.encode(v, level)[0])
            pixels += img.width * img.height
        rows.append({"quality": q, "zeros": float(np.mean(zeros)), "bpp": 8 * coded / pixels,
                     "factorized_bpp": 8 * factorized / pixels, "saved": 1 - coded / factorized})
    return rows


def stability(codec: aecodec.Codec, images: list[Image.Image]) -> list[dict]:
    clean = [latent(codec, img) for img in images]
    moved = {sigma: [latent(codec, noisy(img, sigma, i)) for i, img in enumerate(images)] for sigma in NOISE}
    rows = []
    for q in codec.quality_levels:
        level = codec.levels_per_quality[q - 1]
        row: dict = {"quality": q}
        for sigma in NOISE:
            changed = [float(np.mean(codec.model.symbols(a, level) != codec.model.symbols(b, level)))
                       for a, b in zip(clean, moved[sigma])]
            row[f"changed_sigma{sigma}"] = float(np.mean(changed))
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    lines = ["Sparsity: share of latent values that are zero, and the coded latent's bpp as the model codes it "
             "and as a plain factorized prior codes the same values.\n",
             "| model | quality | zeros | bpp (as coded) | bpp (factorized) | saved |", "|---|---|---|---|---|---|"]
    for name, rows in result["sparsity"].items():
        lines += [f"| {name} | {r['quality']} | {100 * r['zeros']:.1f}% | {r['bpp']:.4f} | {r['factorized_bpp']:.4f} "
                  f"| {100 * r['saved']:+.1f}% |" for r in rows]
    lines += ["\nStability: share of latent values that change when the input gets Gaussian noise of sigma "
              + " and ".join(str(s) for s in NOISE) + " (8-bit levels).\n",
              "| model | quality | " + " | ".join(f"changed, sigma {s}" for s in NOISE) + " |",
              "|---|---|" + "---|" * len(NOISE)]
    for name, rows in result["stability"].items():
        lines += [f"| {name} | {r['quality']} | " + " | ".join(f"{100 * r[f'changed_sigma{s}']:.1f}%" for s in NOISE) + " |"
                  for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--sparse", default="vae,sparse", help="models for the sparsity table (comma list)")
    parser.add_argument("--stable", default="vae,contractive", help="models for the stability table (comma list)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "codes.json")
    args = parser.parse_args()
    images = [Image.open(f).convert("RGB") for f in sorted(args.dataset.glob("*.png"))]
    result = {"images": len(images),
              "sparsity": {m: sparsity(aecodec.load(m), images) for m in args.sparse.split(",") if m},
              "stability": {m: stability(aecodec.load(m), images) for m in args.stable.split(",") if m}}
    result["models"] = {m: aecodec.load(m).fingerprint.hex() for m in {*result["sparsity"], *result["stability"]}}
    save(args.out, result, markdown)


if __name__ == "__main__":
    main()
