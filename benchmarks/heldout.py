"""Rate-distortion on the held-out training images (the last four of the training folder), the
only images a model may be selected or tuned on, against Pillow JPEG 4:2:0.

    python -m benchmarks.heldout --dataset ../shared/data/train [--model vae | --model runs/x/checkpoint.pt --out F] [--beam N]

Two views of the same four photographs: their 512x512 top-left corners (what ``aecodec
train`` validates on) and the whole images downscaled by 2 (Lanczos), whose detail per pixel is
closer to Kodak's. bpp is real entropy-coded bits (a checkpoint gets provisional tables, as in
training); BD-rates are against JPEG with Pillow's default and with optimised Huffman tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import aecodec
from aecodec.bd import bd_rate
from aecodec.model import AutoEncoder, ModelConfig
from aecodec.train import IMAGE_SUFFIXES, TrainConfig, held_out_views, load_checkpoint, validate

from .kodak_roundtrip import jpeg_curve, script

HELD_OUT = TrainConfig.val_count


def load_model(model: str) -> AutoEncoder:
    """A shipped model's name, an exported file, or a training checkpoint (.pt)."""
    if model.endswith(".pt"):
        state = load_checkpoint(Path(model))
        net = AutoEncoder(ModelConfig(**state["model_config"]))
        net.load_state_dict(state["model"])
        return net.eval()
    return aecodec.load(model).model


def views(dataset: Path) -> dict[str, list[Image.Image]]:
    """The held-out views export chooses the rate bias on (``aecodec.train.held_out_views``)."""
    files = sorted(p for p in dataset.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[-HELD_OUT:]
    images = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    return {name: [Image.fromarray(v.permute(1, 2, 0).numpy()) for v in view]
            for name, view in held_out_views(images).items()}


def run(dataset: Path, model: str, beam: int = 1) -> dict:
    net = load_model(model)
    result = {"model": model, "beam": beam, "sets": {}}
    for name, images in views(dataset).items():
        rows = validate(net, [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images], torch.device("cpu"), beam)
        rates, scores = [r["bpp"] for r in rows], [r["psnr"] for r in rows]
        bd = {}
        for anchor, optimize in (("jpeg", False), ("jpeg_optimized", True)):
            curve = jpeg_curve(images, optimize)
            bd[anchor] = bd_rate([c[0] for c in curve], [c[1] for c in curve], rates, scores)
        result["sets"][name] = {"rows": rows, "bd_rate": bd}
    return result


def markdown(result: dict) -> str:
    search = f", beam search of {result['beam']} paths" if result.get("beam", 1) > 1 else ""
    lines = [f"Held-out images, model `{result['model']}`{search}:", "",
             "| images | bpp / PSNR (dB) per quality | BD-rate vs JPEG (default tables) | vs JPEG (optimised) |",
             "|---|---|---|---|"]
    for name, s in result["sets"].items():
        points = "  ".join(f"{r['bpp']:.3f} / {r['psnr']:.2f}" for r in s["rows"])
        lines.append(f"| {name} | {points} | {100 * s['bd_rate']['jpeg']:+.1f}% | {100 * s['bd_rate']['jpeg_optimized']:+.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    script(__doc__, run, markdown, "heldout")
