"""What the context tables save: one model's files with its context tables against the same
model's tables without context (same transforms, same symbols, so the same pixels), on a folder
of images and on the held-out views of the training photos.

    python -m benchmarks.context --dataset ../shared/data/kodak --train ../shared/data/train --model vae
    python -m benchmarks.context --dataset ../shared/data/kodak --train ../shared/data/train --model rvq

For a VAE the tables without context are its factorized prior's. For the lattice `rvq` they
are plane tables that see nothing of the neighbourhood: one significance table per plane and
channel for every side (both passes, both checkerboard halves), refinement tables as before (by
the coefficient's own magnitude), counted on the same training photos. The passes' order
stays, so the decisions and the pixels are the same; what differs is what the neighbourhood is
allowed to tell the tables (which pass and half a coefficient is in, and its activity class).
``--classes-only`` keeps the sides apart and drops only the activity classes.
bpp is whole .aec files; PSNR is the decoded 8-bit image's, identical for both tables (the
values coded are the same: rate-biased rounding prices choices with the factorized tables in
both). BD-rate is the new tables' against the old over the model's quality ladder.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import aecodec
from aecodec.bd import bd_rate
from aecodec.codec import Codec
from aecodec.entropy import PlaneTables
from aecodec.metrics import bpp, psnr
from aecodec.train import TrainConfig, load_folder, symbols_of

from .dataset import list_images, load_rgb
from .heldout import views
from .kodak_roundtrip import save


def factorized(codec: Codec, train: Path | None = None, classes_only: bool = False) -> Codec:
    """The same model with its tables without context: a VAE's factorized tables (what its
    files were before context), or plane tables with one class and, unless ``classes_only``,
    one table for every side, counted on the training photos of ``train`` (the lattice rvq)."""
    plain = copy.deepcopy(codec.model)
    if isinstance(plain.entropy, PlaneTables):
        photos = load_folder(train)[: -TrainConfig.val_count]
        symbols = symbols_of(plain, photos, torch.device("cpu"))(plain.bottleneck.levels)
        plain.entropy = PlaneTables.fit([s[:, 0] for s in symbols], plain.bottleneck.head, classes=1,
                                        pooled=not classes_only)
    else:
        plain.entropy = codec.model.entropy.factorized()
    return Codec(plain)


def curves(codec: Codec, old_codec: Codec, images: list[Image.Image]) -> list[dict]:
    """Per quality: mean bpp with context tables and without, and mean PSNR."""
    rows = []
    for q in codec.quality_levels:
        new, old, scores = [], [], []
        for img in images:
            data = codec.compress(img, q)
            reference = old_codec.compress(img, q)
            decoded = codec.decompress(data)
            if np.asarray(decoded).tobytes() != np.asarray(old_codec.decompress(reference)).tobytes():
                raise SystemExit("the two tables decoded different pixels: they must code the same values")
            new.append(bpp(len(data), img))
            old.append(bpp(len(reference), img))
            scores.append(psnr(img, decoded))
        rows.append({"quality": q, "bpp_context": float(np.mean(new)), "bpp_factorized": float(np.mean(old)),
                     "psnr": float(np.mean(scores))})
    return rows


def run(dataset: Path, train: Path, model: str, classes_only: bool = False) -> dict:
    codec = aecodec.load(model)
    if not getattr(codec.model.entropy, "contextual", isinstance(codec.model.entropy, PlaneTables)):
        raise SystemExit(f"model {model} has no context tables")
    old_codec = factorized(codec, train, classes_only)
    files = list_images(dataset)
    sets = {f"{dataset.name} ({len(files)} images)": [load_rgb(f.path) for f in files]}
    sets |= {f"held-out, {name}": images for name, images in views(train).items()}
    result = {"model": model, "baseline": baseline(codec, classes_only), "sets": {}}
    for name, images in sets.items():
        rows = curves(codec, old_codec, images)
        psnrs = [r["psnr"] for r in rows]
        saving = bd_rate([r["bpp_factorized"] for r in rows], psnrs, [r["bpp_context"] for r in rows], psnrs)
        result["sets"][name] = {"rows": rows, "bd_rate": saving}
    return result


def baseline(codec: Codec, classes_only: bool) -> str:
    """What the tables without context are, in words."""
    if not isinstance(codec.model.entropy, PlaneTables):
        return "the factorized prior's tables"
    if classes_only:
        return "one table per plane, channel and side (no activity classes)"
    return "one significance table per plane and channel (neither pass, half nor activity class)"


def markdown(result: dict) -> str:
    lines = [f"Context tables against tables without context, model `{result['model']}` (same values, same pixels); "
             f"without context: {result['baseline']}:", "",
             "| images | quality | PSNR (dB) | bpp, no context | bpp, context | change |", "|---|---|---|---|---|---|"]
    for name, s in result["sets"].items():
        for r in s["rows"]:
            change = 100 * (r["bpp_context"] / r["bpp_factorized"] - 1)
            lines.append(f"| {name} | {r['quality']} | {r['psnr']:.2f} | {r['bpp_factorized']:.4f} | "
                         f"{r['bpp_context']:.4f} | {change:+.1f}% |")
        lines.append(f"| {name} | **BD-rate** | | | | **{100 * s['bd_rate']:+.1f}%** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True, help="training folder (its last 4 are held out)")
    parser.add_argument("--model", default="vae")
    parser.add_argument("--classes-only", action="store_true",
                        help="lattice rvq: keep the passes' tables apart, drop only the activity classes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "context.json")
    args = parser.parse_args()
    save(args.out, run(args.dataset, args.train, args.model, args.classes_only), markdown)


if __name__ == "__main__":
    main()
