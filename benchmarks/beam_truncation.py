"""What truncating a beam-searched file gives: each image encoded at the top quality with
``--beam N``, truncated to every lower quality, against beam and greedy encoding at that
quality directly (mean bpp and PSNR over the images; BD-rate against greedy).

    python -m benchmarks.beam_truncation --dataset DIR [--beam 4]

Beam search is the ECVQ residual VQ's (``ResidualVQ``): since the default ``rvq`` became the
lattice quantizer, the shipped model with that encoder is ``denoise`` (the previous rvq's
encoder and tables, its own decoder). Run it on held-out images (say the held-out photos downscaled by 2), never to tune on Kodak.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import aecodec
from aecodec.bd import bd_rate
from aecodec.imageio import open_image
from aecodec.metrics import psnr
from aecodec.train import IMAGE_SUFFIXES


def run(folder: Path, beam: int) -> dict[str, list[tuple[float, float]]]:
    codec = aecodec.load("denoise")
    images = [open_image(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    top = max(codec.quality_levels)
    tops = [codec.compress(img, top, beam=beam) for img in images]
    rows: dict[str, list[tuple[float, float]]] = {"truncated": [], "beam": [], "greedy": []}
    for q in codec.quality_levels:
        files = {"truncated": [codec.truncate(t, q) for t in tops],
                 "beam": [codec.compress(img, q, beam=beam) for img in images],
                 "greedy": [codec.compress(img, q) for img in images]}
        for name, datas in files.items():
            bpp = np.mean([8 * len(d) / (img.width * img.height) for d, img in zip(datas, images)])
            quality = np.mean([psnr(img, codec.decompress(d)) for d, img in zip(datas, images)])
            rows[name].append((float(bpp), float(quality)))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--beam", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(args.dataset, args.beam)
    print("| quality | " + " | ".join(f"{n} bpp / PSNR" for n in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for q, points in enumerate(zip(*rows.values()), 1):
        print(f"| {q} | " + " | ".join(f"{b:.3f} / {p:.2f}" for b, p in points) + " |")
    g = np.array(rows["greedy"])
    for name in ("truncated", "beam"):
        r = np.array(rows[name])
        print(f"{name} vs greedy: BD-rate {100 * bd_rate(g[:, 0], g[:, 1], r[:, 0], r[:, 1]):+.1f}%")
