"""Rate-distortion benchmark: every aecodec model and the classical codecs over a folder of
images, with BD-rates, plots and benchmarks/RESULTS.md, all from one command:

    python -m benchmarks.rd --dataset /work/shared/data/kodak --out benchmarks/results/kodak

Classical codecs run in parallel single-threaded worker processes; aecodec models run in this
process with one torch thread per worker. Results are cached (see cache.py), so re-running after
a model change measures only that model.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from tqdm import tqdm

import aecodec
from aecodec.codec import DEFAULT_MODEL

from . import plots, report
from .cache import ResultCache, cache_key
from .codecs import AecodecCodec, BenchCodec, Params, classical_codecs, single_threaded_decoders
from .crops import crop_panels
from .curves import Curve, average_curves
from .dataset import ImageFile, list_images, load_rgb
from .environment import environment
from .measure import Record, measure

CROP_BPP = 0.28
"""Rate of the crop figure: low enough that codecs differ visibly, where learned codecs aim."""
CROP_SIZE = 192
CROP_IMAGE = "kodim23.png"
"""Default crop image when it is in the run (Kodak's parrots: smooth background, fine feathers)."""

Task = tuple[int, BenchCodec, Params, ImageFile]
Outcome = tuple[int, Record | str]
Mapper = Callable[[Callable[[Task], Outcome], Iterable[Task]], Iterator[Outcome]]


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    images = list_images(args.dataset, args.images)
    crop_image = _crop_image(images, args.crop_image)
    classical = classical_codecs()
    learned = [AecodecCodec(m) for m in (*aecodec.available_models(), *args.model)]
    learned += [AecodecCodec(DEFAULT_MODEL, beam) for beam in args.beam]
    cache = ResultCache(args.cache or args.out / "cache.jsonl")

    with _workers(args.workers) as mapper:
        records = measure_all(classical, images, cache, mapper, "classical codecs")
    torch.set_num_threads(args.workers)
    records += measure_all(learned, images, cache, map, "aecodec models", warm_up=True)

    codecs: list[BenchCodec] = [*classical, *learned]
    curves = average_curves(records, len(images))
    args.out.mkdir(parents=True, exist_ok=True)
    _write_records(records, args.out / "per_image.csv")
    (args.out / "curves.json").write_text(json.dumps([c.to_json() for c in curves], indent=1) + "\n")
    figures = _figures(curves, codecs, len(images), crop_image, args.out)

    run = report.Run(
        command=f"python -m benchmarks.rd {shlex.join(argv)}", dataset=args.dataset.name, images=len(images),
        size=" or ".join(sorted({f"{r.width}x{r.height}" for r in records})) + " pixels", workers=args.workers,
        environment=environment(),
        figures={caption: os.path.relpath(path, args.report.parent) for caption, path in figures.items()},
        speed=_speed_results(args.report.parent / "results" / "speed.json"),
        sections=_other_benchmarks(args.report.parent / "results"),
    )
    args.report.write_text(report.render(run, curves, codecs))
    print(f"wrote {args.report} and {args.out}/")


OTHER_BENCHMARKS = {
    "ceiling.md": ("The transforms' ceiling: no quantization",
                   "python -m benchmarks.ceiling --kodak ../shared/data/kodak --train ../shared/data/train"),
    "denoise.md": ("Denoising: noisy Kodak", "python -m benchmarks.denoise --dataset ../shared/data/kodak"),
    "codes.md": ("The code itself: sparsity and stability", "python -m benchmarks.codes --dataset ../shared/data/kodak"),
    "context.md": ("Entropy models: context tables against factorized tables",
                   "python -m benchmarks.context --dataset ../shared/data/kodak --train ../shared/data/train --model vae"),
    "context_rvq.md": ("Entropy models: the lattice rvq's neighbourhood contexts (its passes, checkerboard halves "
                       "and activity classes) against tables that see no neighbourhood",
                       "python -m benchmarks.context --dataset ../shared/data/kodak --train ../shared/data/train "
                       "--model rvq --out benchmarks/results/context_rvq.json"),
    "index_context.md": ("Entropy models: what context could save on the ECVQ residual VQ's indices "
                         "(the rvq before 2026-12-07, whose encoder `denoise` keeps)",
                         "python -m benchmarks.index_context --train ../shared/data/train"),
}
"""Tables other benchmark scripts write, included in the report (title, command that makes them)."""


def _other_benchmarks(results: Path) -> dict[str, str]:
    return {title: f"Made by `{command}`.\n\n" + (results / name).read_text()
            for name, (title, command) in OTHER_BENCHMARKS.items() if (results / name).exists()}


def measure_all(codecs: Sequence[BenchCodec], images: Sequence[ImageFile], cache: ResultCache,
                mapper: Mapper, what: str, warm_up: bool = False) -> list[Record]:
    """Every point of every codec on every image: from the cache, else measured through
    ``mapper`` (builtin map, or a worker pool's) and cached. A point that fails is reported and
    left out, so that one bad quality level does not cost the rest of the run."""
    points = [(codec, params, image) for image in images for codec in codecs for params in codec.points()]
    tasks: list[Task] = [(index, *point) for index, point in enumerate(points)]
    keys = [cache_key(codec, params, image) for _, codec, params, image in tasks]
    results = [cache.get(key, task[3]) for key, task in zip(keys, tasks, strict=True)]
    pending = [t for t in tasks if results[t[0]] is None]
    if warm_up:  # first calls allocate and tune kernels: keep that out of the timings
        for codec in {id(t[1]): t[1] for t in pending}.values():
            _attempt((0, codec, codec.points()[0], images[0]))
    progress = tqdm(mapper(_attempt, pending), total=len(pending), unit="pt",
                    desc=f"{what} ({len(tasks) - len(pending)} cached)")
    for index, outcome in progress:
        if isinstance(outcome, Record):
            cache.put(keys[index], outcome)
            results[index] = outcome
        else:
            tqdm.write(f"skipped: {outcome}")
    return [r for r in results if r is not None]


def _attempt(task: Task) -> Outcome:
    """``measure`` that reports a failure instead of raising it out of a worker."""
    index, codec, params, image = task
    try:
        return index, measure(codec, params, image)
    except Exception as exc:  # noqa: BLE001 - any codec error only costs its own point
        return index, f"{codec.name} {params} on {image.name}: {exc.__class__.__name__}: {exc}"


def _init_worker() -> None:
    torch.set_num_threads(1)
    single_threaded_decoders()


@contextmanager
def _workers(n: int) -> Iterator[Mapper]:
    """An unordered map over ``n`` worker processes (in this process when n is 1, which is easier
    to debug). Workers are spawned, not forked: a fork of a process that has used torch's thread
    pool can hang. A worker that dies raises BrokenProcessPool rather than hanging the run, and an
    interrupted run drops its queued tasks instead of finishing them."""
    if n <= 1:
        _init_worker()
        yield map
        return
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
    try:
        yield lambda fn, items: (f.result() for f in as_completed([pool.submit(fn, item) for item in items]))
    finally:
        pool.shutdown(cancel_futures=True)


def _write_records(records: list[Record], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in dataclasses.fields(Record)])
        writer.writeheader()
        for r in records:
            writer.writerow(dataclasses.asdict(r) | {"params": json.dumps(r.params)})


def _crop_image(images: Sequence[ImageFile], name: str | None) -> ImageFile:
    """The image named on the command line, else CROP_IMAGE if in the run, else the first."""
    by_name = {i.name: i for i in images}
    if name is not None and name not in by_name:
        raise SystemExit(f"--crop-image {name}: not among this run's images")
    return by_name.get(name or CROP_IMAGE, images[0])


def _figures(curves: list[Curve], codecs: Sequence[BenchCodec], images: int, crop_image: ImageFile,
             out: Path) -> dict[str, Path]:
    """The PNGs of the report, by caption."""
    n = f"{images} images"
    figures = {"bpp vs PSNR": out / "rd_psnr.png", "bpp vs MS-SSIM (dB)": out / "rd_msssim.png"}
    plots.plot_rd(curves, "psnr", "PSNR RGB (dB)", figures["bpp vs PSNR"], f"PSNR, mean of {n}")
    plots.plot_rd(curves, "msssim_db", "MS-SSIM RGB (dB)", figures["bpp vs MS-SSIM (dB)"], f"MS-SSIM, mean of {n}")
    caption = f"{CROP_SIZE}x{CROP_SIZE} crops of {crop_image.name} near {CROP_BPP} bpp"
    figures[caption] = out / "crops.png"
    panels = crop_panels(codecs, load_rgb(crop_image.path), CROP_BPP, CROP_SIZE)
    plots.plot_crops(panels, figures[caption], caption)
    return figures


def _speed_results(path: Path) -> list[dict] | None:
    """The speed suite's pytest-benchmark JSON, when it has been run (see test_speed.py)."""
    return json.loads(path.read_text())["benchmarks"] if path.exists() else None


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rd", description=(
        "Rate-distortion benchmark of every aecodec model and the classical codecs over a folder of images."))
    p.add_argument("--dataset", type=Path, required=True, help="folder of lossless images (PNG, ...)")
    p.add_argument("--out", type=Path, required=True, help="folder for CSV/JSON results, plots and cache")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes for classical codecs, torch threads for aecodec (default: all cores)")
    p.add_argument("--images", type=int, help="only the first N images (by name)")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="an exported .safetensors model to add to the shipped ones (repeatable)")
    p.add_argument("--beam", type=int, action="append", default=[], metavar="N",
                   help="also the default model encoded with an N-path beam search (repeatable)")
    p.add_argument("--cache", type=Path, help="result cache (default: OUT/cache.jsonl)")
    p.add_argument("--report", type=Path, default=Path(__file__).parent / "RESULTS.md",
                   help="Markdown report to write (default: benchmarks/RESULTS.md)")
    p.add_argument("--crop-image", help=f"file name of the crop figure's image (default: {CROP_IMAGE} "
                   "if in the run, else the first)")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


if __name__ == "__main__":
    main()
