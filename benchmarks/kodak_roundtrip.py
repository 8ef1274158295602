"""Round-trip every image of a folder through ``aecodec encode`` / ``aecodec decode`` at every
quality level, check size and mode, and tabulate average bpp and PSNR against Pillow JPEG.

    python -m benchmarks.kodak_roundtrip --dataset ../shared/data/kodak [--model rvq] [--beam N]

bpp counts the whole .aec file (header included); PSNR is on 8-bit RGB, averaged per image
(as CompressAI reports it). JPEG is Pillow's 4:2:0 at quality 5, 10, ..., 95; its PSNR at our
bpp is interpolated linearly in log(bpp). Writes benchmarks/results/kodak_roundtrip.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec
from aecodec.cli import main as cli
from aecodec.metrics import bpp, psnr
from aecodec.transforms import STRIDE


def jpeg_curve(images: list[Image.Image], optimize: bool = False) -> list[tuple[float, float]]:
    """(average bpp, average PSNR) of Pillow JPEG 4:2:0 at quality 5..95: with Pillow's default
    Huffman tables (the curve CompressAI publishes for Kodak), or optimised ones (the anchor of
    benchmarks/RESULTS.md; on Kodak, 36% smaller at quality 5)."""
    curve = []
    for q in range(5, 100, 5):
        rates, scores = [], []
        for img in images:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=q, subsampling="4:2:0", optimize=optimize)
            rates.append(bpp(buf.tell(), img))
            scores.append(psnr(img, Image.open(io.BytesIO(buf.getvalue()))))
        curve.append((float(np.mean(rates)), float(np.mean(scores))))
    return curve


def interpolate(curve: list[tuple[float, float]], rate: float) -> float | None:
    """PSNR of a curve at ``rate`` (linear in log bpp); None outside its range."""
    rates, scores = np.log([c[0] for c in curve]), [c[1] for c in curve]
    if not rates[0] <= np.log(rate) <= rates[-1]:
        return None
    return float(np.interp(np.log(rate), rates, scores))


def symbols_per_stage(codec: aecodec.Codec, img: Image.Image) -> int:
    """RVQ indices per stage of an image: one per channel group at each latent position (1/16
    of each padded side)."""
    return int(np.prod(codec.model.bottleneck.symbol_shape(-(-img.height // STRIDE), -(-img.width // STRIDE))))


def _coding_gain(codec: aecodec.Codec, level: int, rates: list[float], images: list[Image.Image]) -> float | None:
    """Bits saved against log2(K) bits per RVQ index; None for a bottleneck without a fixed
    alphabet (the VAE's baseline would be arbitrary)."""
    alphabet = getattr(codec.model.bottleneck, "alphabet", None)
    if alphabet is None:
        return None
    fixed = sum(level * symbols_per_stage(codec, img) * np.log2(alphabet) for img in images)
    return 1 - sum(r * img.width * img.height for r, img in zip(rates, images)) / fixed


def run(dataset: Path, model: str, beam: int = 1) -> dict:
    files = sorted(dataset.glob("*.png"))
    codec = aecodec.load(model)
    images = [Image.open(f).convert("RGB") for f in files]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in codec.quality_levels:
            rates, scores, seconds = [], [], 0.0
            for f, img in zip(files, images):
                aec, png = Path(tmp) / f"{f.stem}.aec", Path(tmp) / f"{f.stem}.png"
                t = time.perf_counter()
                with redirect_stdout(io.StringIO()):
                    if cli(["encode", str(f), str(aec), "--model", model, "--quality", str(q), "--beam", str(beam),
                            "--force"]) or \
                            cli(["decode", str(aec), str(png), "--model", model, "--force"]):
                        raise SystemExit(f"round trip failed on {f} at quality {q}")
                seconds += time.perf_counter() - t
                with Image.open(png) as out:
                    if out.size != img.size or out.mode != img.mode:
                        raise SystemExit(f"{f}: got {out.size} {out.mode}, expected {img.size} {img.mode}")
                    scores.append(psnr(img, out))
                rates.append(bpp(aec.stat().st_size, img))
            level = codec.levels_per_quality[q - 1]
            rows.append({"quality": q, "level": level, "bpp": float(np.mean(rates)),
                         "psnr": float(np.mean(scores)), "seconds_per_image": seconds / len(files),
                         "entropy_coding_gain": _coding_gain(codec, level, rates, images)})
            print(f"q{q}: {rows[-1]['bpp']:.3f} bpp {rows[-1]['psnr']:.2f} dB", file=sys.stderr)
    jpeg = jpeg_curve(images)
    for r in rows:
        ref = interpolate(jpeg, r["bpp"])
        r["jpeg_psnr"] = ref
        r["margin_db"] = None if ref is None else r["psnr"] - ref
    return {"model": model, "beam": beam, "fingerprint": codec.fingerprint.hex(), "images": len(files),
            "rows": rows, "jpeg": [{"bpp": b, "psnr": p} for b, p in jpeg]}


def markdown(result: dict) -> str:
    lines = ["| quality | level | bpp | PSNR (dB) | JPEG 4:2:0 at same bpp | margin (dB) | entropy-coding gain |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ref = "out of JPEG's range" if r["jpeg_psnr"] is None else f"{r['jpeg_psnr']:.2f}"
        margin = "" if r["margin_db"] is None else f"{r['margin_db']:+.2f}"
        gain = "" if r["entropy_coding_gain"] is None else f"{100 * r['entropy_coding_gain']:.1f}%"
        lines.append(f"| {r['quality']} | {r['level']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {ref} | {margin} | {gain} |")
    return "\n".join(lines)


def script(doc: str, run: Callable[[Path, str], dict], markdown: Callable[[dict], str], name: str) -> None:
    """The command line of a benchmark over one folder of images: --dataset, --model, --out,
    --beam; writes results/<name>.json (<name>_<model>.json for a model other than rvq,
    _beam<N> added for a beam search) and .md and prints the table."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--model", default="rvq")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--beam", type=int, default=1, help="encode with an N-path beam search (rvq models)")
    args = parser.parse_args()
    if args.out is None:
        stem = name if args.model == "rvq" else f"{name}_{args.model}"
        args.out = Path(__file__).parent / "results" / (stem + (f"_beam{args.beam}" if args.beam > 1 else "") + ".json")
    save(args.out, run(args.dataset, args.model, args.beam), markdown)


def save(out: Path, result: dict, markdown: Callable[[dict], str]) -> None:
    """Write a benchmark's result as out (JSON) and out with .md (its table), and print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    script(__doc__, run, markdown, "kodak_roundtrip")
