"""The transforms' ceiling: the PSNR a model's analysis and synthesis reach with no quantization,
beside a linear block PCA of the same latent size. No quantizer or entropy model can take a
model above it.

    python -m benchmarks.ceiling --kodak ../shared/data/kodak --train ../shared/data/train \
        [--model vae --model rvq --model runs/x/checkpoint.pt]

Each image goes through the analysis, the bottleneck's finest level with no quantization
(``unquantized``: the VAE's rotation and gains and back, the RVQ's coding space and back) and
the synthesis, rounded to 8 bits as a decoded file would be.
The PCA keeps the 16x16-block principal axes (as many as the model's latent has channels per
16x16 block) fitted on 2048 random 128x128 crops of the training photos, the held-out four
excluded, and is what the lapped transform starts from. Kodak is measured, never fitted on.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aecodec.imageio import pad_to_stride
from aecodec.train import KLT_CROPS, TrainConfig, load_folder, random_crops
from aecodec.transforms import STRIDE, LappedAnalysis, LappedSynthesis, block_klt

from .dataset import list_images, load_rgb
from .heldout import load_model, views
from .kodak_roundtrip import save

OUT = Path(__file__).parent / "results" / "ceiling.json"


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]


@torch.no_grad()
def mean_psnr(encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
              images: list[Image.Image]) -> float:
    """Mean over images of the 8-bit PSNR of decode(encode(x))."""
    scores = []
    for image in images:
        x = _tensor(image)
        y = decode(encode(pad_to_stride(x, STRIDE)))[..., : x.shape[2], : x.shape[3]]
        mse = (y.clamp(0, 1).mul(255).round().div(255) - x).square().mean()
        scores.append(float(-10 * torch.log10(mse)))
    return float(np.mean(scores))


def block_pca(train: Path, components: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The KLT-initialised lapped pair with no residual branch to speak of: a block PCA."""
    photos = load_folder(train)[: -TrainConfig.val_count]
    basis, mean = block_klt(random_crops(photos, KLT_CROPS, 128, random.Random(0)), components)
    analysis, synthesis = LappedAnalysis(1, components), LappedSynthesis(1, components)
    analysis.initialise(basis, mean)
    synthesis.initialise(basis, mean)
    return analysis.eval(), synthesis.eval()


def run(kodak: Path, train: Path, models: list[str]) -> dict:
    sets = {"Kodak (24)": [load_rgb(f.path) for f in list_images(kodak)]}
    sets |= {f"held-out {name}": images for name, images in views(train).items()}
    rows = []
    for name in models:
        net = load_model(name)
        row = {"model": name, "transform": net.config.transform, "latent": net.config.latent}
        encode = lambda x: net.bottleneck.unquantized(net.analyse(x))
        row["psnr"] = {s: mean_psnr(encode, net.synthesis, images) for s, images in sets.items()}
        pca = block_pca(train, net.config.latent)
        row["pca_psnr"] = {s: mean_psnr(*pca, images) for s, images in sets.items()}
        rows.append(row)
        print(row, flush=True)
    return {"sets": list(sets), "rows": rows}


def markdown(result: dict) -> str:
    head = " | ".join(f"{s}: model / PCA" for s in result["sets"])
    lines = ["No-quantization PSNR (dB, 8-bit) of each model's transforms beside a 16x16 block PCA with "
             "as many coefficients per block as the latent has channels:", "",
             f"| model | transform | latent | {head} |", "|---|---|---|" + "---|" * len(result["sets"])]
    for r in result["rows"]:
        cells = " | ".join(f"{r['psnr'][s]:.2f} / {r['pca_psnr'][s]:.2f}" for s in result["sets"])
        lines.append(f"| `{r['model']}` | {r['transform']} | {r['latent']} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kodak", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--model", action="append", default=None, help="shipped name, model file or checkpoint")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    save(args.out, run(args.kodak, args.train, args.model or ["rvq", "vae"]), markdown)
