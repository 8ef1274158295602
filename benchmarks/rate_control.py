"""Rate control and progressive files on a folder of images, through the command line.

    python -m benchmarks.rate_control --dataset ../shared/data/kodak [--model rvq] [--beam N]

For every image: ``aecodec encode --bpp T`` for T in 0.25, 0.5, 1.0 (each file must be within
5% below T, never above), ``aecodec encode --psnr P`` for P in 30 and 34 (the decoded image
must reach P dB; "refined files" counts those that took the refinement layer, the smaller file
where stages alone could also reach P; "by stages alone" counts the images whose top quality,
with no refinement, reaches P), and ``aecodec truncate`` of the top-quality file to every lower
quality, compared byte for byte with encoding at that quality directly. Writes
benchmarks/results/rate_control.{json,md}.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec
from aecodec.cli import main as cli
from aecodec.metrics import bpp, psnr

from .kodak_roundtrip import script

RATES = (0.25, 0.5, 1.0)
PSNRS = (30.0, 34.0)


def _cli(*argv: object) -> None:
    with redirect_stdout(io.StringIO()):
        if cli([str(a) for a in argv]):
            raise SystemExit(f"aecodec {' '.join(map(str, argv))} failed")


def _round_trip(src: Path, aec: Path, model: str, *target: object) -> tuple[float, float, float]:
    """(bpp, PSNR, seconds to encode) of one encode/decode through the CLI."""
    t = time.perf_counter()
    _cli("encode", src, aec, "--model", model, "--force", *target)
    seconds = time.perf_counter() - t
    png = aec.with_suffix(".png")
    _cli("decode", aec, png, "--model", model, "--force")
    with Image.open(src) as ref, Image.open(png) as out:
        return bpp(aec.stat().st_size, ref), psnr(ref, out), seconds


def run(dataset: Path, model: str, beam: int = 1) -> dict:
    files = sorted(dataset.glob("*.png"))
    codec = aecodec.load(model)
    search = ("--beam", beam) if beam > 1 else ()
    rows: dict[str, list[dict]] = {f"bpp {r}": [] for r in RATES} | {f"psnr {p:g}": [] for p in PSNRS}
    truncation_mismatches = []
    tops = []  # each image's PSNR at the top quality: the most its stages alone can reach
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            aec = Path(tmp) / f"{f.stem}.aec"
            for key, target in [(f"bpp {r}", ("--bpp", r)) for r in RATES] + [(f"psnr {p:g}", ("--psnr", p)) for p in PSNRS]:
                got, score, seconds = _round_trip(f, aec, model, *target, *search)
                rows[key].append({"image": f.name, "bpp": got, "psnr": score, "seconds": seconds,
                                  "refined": codec.info(aec.read_bytes()).refine is not None})
            top = codec.quality_levels[-1]
            tops.append(_round_trip(f, aec, model, "--quality", top)[1])
            for q in codec.quality_levels[:-1]:
                cut, direct = Path(tmp) / "cut.aec", Path(tmp) / "direct.aec"
                _cli("truncate", aec, cut, "--quality", q, "--model", model, "--force")
                _cli("encode", f, direct, "--model", model, "--quality", q, "--force")
                if cut.read_bytes() != direct.read_bytes():
                    truncation_mismatches.append(f"{f.name} q{q}")
            print(f"{f.name}: " + "  ".join(f"{k}: {v[-1]['bpp']:.3f} bpp {v[-1]['psnr']:.2f} dB"
                                            for k, v in rows.items()), file=sys.stderr)
    summary = []
    for key, items in rows.items():
        kind, value = key.split()
        rates = np.array([i["bpp"] for i in items])
        scores = np.array([i["psnr"] for i in items])
        ok = (rates <= float(value)) & (rates >= 0.95 * float(value)) if kind == "bpp" else scores >= float(value)
        summary.append({"target": key, "images": len(items), "meeting": int(ok.sum()),
                        "bpp_mean": float(rates.mean()), "bpp_min": float(rates.min()), "bpp_max": float(rates.max()),
                        "psnr_mean": float(scores.mean()), "psnr_min": float(scores.min()),
                        "refined": sum(i["refined"] for i in items),
                        "stages_alone": int((np.array(tops) >= float(value)).sum()) if kind == "psnr" else None,
                        "seconds_per_image": float(np.mean([i["seconds"] for i in items]))})
    return {"model": model, "fingerprint": codec.fingerprint.hex(), "images": len(files),
            "summary": summary, "per_image": rows,
            "top_quality_psnr": {f.name: score for f, score in zip(files, tops)},
            "truncation": {"qualities": len(codec.quality_levels) - 1, "mismatches": truncation_mismatches}}


def markdown(result: dict) -> str:
    lines = ["| target | images meeting it | bpp mean (min-max) | PSNR mean (min) | refined files | by stages alone | encode s/image |",
             "|---|---|---|---|---|---|---|"]
    for s in result["summary"]:
        alone = "" if s["stages_alone"] is None else f"{s['stages_alone']}/{s['images']}"
        lines.append(f"| {s['target']} | {s['meeting']}/{s['images']} | {s['bpp_mean']:.3f} ({s['bpp_min']:.3f}-"
                     f"{s['bpp_max']:.3f}) | {s['psnr_mean']:.2f} ({s['psnr_min']:.2f}) | {s['refined']} "
                     f"| {alone} | {s['seconds_per_image']:.2f} |")
    image, worst = min(result["top_quality_psnr"].items(), key=lambda kv: kv[1])
    lines.append("")
    lines.append(f"Top quality with no refinement: {worst:.2f} dB at the least ({image}).")
    t = result["truncation"]
    lines.append("")
    lines.append(f"Truncation of the top-quality file to each of the {t['qualities']} lower qualities: "
                 f"{result['images'] * t['qualities'] - len(t['mismatches'])}/{result['images'] * t['qualities']} "
                 "byte-identical to encoding at that quality directly.")
    return "\n".join(lines)


if __name__ == "__main__":
    script(__doc__, run, markdown, "rate_control")
