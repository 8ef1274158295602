"""Peak memory of batch decoding: one Kodak-sized file against a batch of 64.

    python -m benchmarks.batch_memory --kodak ../shared/data/kodak [--model rvq]

The Kodak images are encoded once at the model's default quality (the 24 cycled to 64 files);
then a fresh process per case decodes them with ``Codec.decompress_batch(blobs,
batch_size=64)`` and reports its peak resident set size (``ru_maxrss``), which includes Python,
torch and the model: the figure a user's process would see.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from .dataset import list_images, load_rgb
from .kodak_roundtrip import save

OUT = Path(__file__).parent / "results" / "batch_memory.json"

CHILD = """
import resource, sys
from pathlib import Path
import aecodec
codec = aecodec.load(sys.argv[1])
blobs = [Path(p).read_bytes() for p in sys.argv[2:]]
images = codec.decompress_batch(blobs, batch_size=64)
assert len(images) == len(blobs)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(model: str, files: list[Path]) -> int:
    """Peak RSS in bytes of a fresh process decoding ``files`` as one batch."""
    out = subprocess.run([sys.executable, "-c", CHILD, model, *map(str, files)],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def run(kodak: Path, model: str, count: int = 64) -> dict:
    import aecodec

    codec = aecodec.load(model)
    with tempfile.TemporaryDirectory() as tmp:
        sources = list_images(kodak)
        files = []
        for i, source in enumerate(sources):
            path = Path(tmp) / f"{i}.aec"
            path.write_bytes(codec.compress(load_rgb(source.path)))
            files.append(path)
        batch = [files[i % len(files)] for i in range(count)]
        one, many = peak_rss(model, batch[:1]), peak_rss(model, batch)
    return {"model": model, "quality": codec.default_quality, "files": count,
            "peak_rss_one": one, "peak_rss_batch": many, "ratio": many / one}


def markdown(r: dict) -> str:
    return (f"Peak RSS decoding Kodak-sized files with `{r['model']}` (quality {r['quality']}), one process per case:\n\n"
            "| files in the batch | peak RSS |\n|---|---|\n"
            f"| 1 | {r['peak_rss_one'] / 2**20:.0f} MiB |\n"
            f"| {r['files']} | {r['peak_rss_batch'] / 2**20:.0f} MiB ({r['ratio']:.2f}x) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kodak", type=Path, required=True)
    parser.add_argument("--model", default="rvq")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    save(args.out, run(args.kodak, args.model), markdown)
