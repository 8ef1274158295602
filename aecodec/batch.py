"""Many files at once: folders of images to .aec and back, and a lazy iterator for datasets.

Each file follows the single-file rules, so a batch can be stopped and re-run at any time:
outputs are written atomically (a finished file is complete, an unfinished one does not
exist), an existing output is skipped unless ``force`` (a re-run does only what is left),
an output that is its own input is refused, and a file that fails is reported and the batch
goes on: one bad photo must not cost the other ten thousand.

    summary = aecodec.compress_folder("photos", "aec", quality=3, workers=4)
    print(summary)            # 120 done, 0 skipped, 1 failed; ... bytes in, ... bytes out; 0.41 bpp
    for name, data in aecodec.iter_compress(dataset_paths, batch_size=16): ...

``workers`` > 1 starts fresh ("spawn") processes, as forking a process whose torch threads
are running can hang; so, as with any multiprocessing, a script must call it from under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

from PIL import Image

from .errors import AecError, FormatError, OutputError, UsageError, about, reading

if TYPE_CHECKING:
    from .codec import Codec

PathLike = Union[str, "os.PathLike[str]"]
ModelSpec = Union[str, "os.PathLike[str]", "Codec"]  # a shipped name, a .safetensors path, or a Codec

AEC_SUFFIX = ".aec"


# -- results ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one file; a worker process sends this back to the parent."""

    src: Path
    dst: Path
    status: str  # "done", "skipped" or "failed"
    bytes_in: int = 0
    bytes_out: int = 0
    coded_bytes: int = 0  # the .aec side: bytes_out when encoding, bytes_in when decoding
    pixels: int = 0
    error: str | None = None  # one line naming the file and the cause
    exit_code: int = 0
    notes: list[str] = field(default_factory=list)  # conversion notes, already naming the file


@dataclass
class Summary:
    """Counts and totals of a batch; sizes and bpp cover the files done in this run only."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    coded_bytes: int = 0
    pixels: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    stale_removed: int = 0  # temporary files of an earlier, killed run that were cleaned up
    _codes: set[int] = field(default_factory=set, repr=False)

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    def merge(self, other: Summary) -> Summary:
        """One summary for two batches (e.g. partitions compressed on different machines)."""
        summed = ("done", "skipped", "failed", "bytes_in", "bytes_out", "coded_bytes", "pixels",
                  "failures", "stale_removed")
        return Summary(**{f: getattr(self, f) + getattr(other, f) for f in summed},
                       _codes=self._codes | other._codes)

    @property
    def bpp(self) -> float | None:
        """Bits per pixel over all files done: total .aec bits / total pixels."""
        return 8 * self.coded_bytes / self.pixels if self.pixels else None

    @property
    def exit_code(self) -> int:
        """0 if nothing failed; the failures' common exit code (README table), else 1."""
        if not self.failed:
            return 0
        return next(iter(self._codes)) if len(self._codes) == 1 else 1

    def add(self, o: Outcome) -> None:
        if o.status == "done":
            self.done += 1
            self.bytes_in += o.bytes_in
            self.bytes_out += o.bytes_out
            self.coded_bytes += o.coded_bytes
            self.pixels += o.pixels
        elif o.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append((o.src, o.error or "failed"))
            self._codes.add(o.exit_code or 1)

    def __str__(self) -> str:
        bpp = f"{self.bpp:.4f} bpp" if self.bpp is not None else "no bpp (nothing done)"
        return (f"{self.done} done, {self.skipped} skipped, {self.failed} failed; "
                f"{self.bytes_in} bytes in, {self.bytes_out} bytes out; {bpp}")

    def check(self) -> Summary:
        """Raise BatchError if any file failed (the CLI's non-zero exit); else return self."""
        if self.failed:
            raise BatchError(self)
        return self


class BatchError(AecError):
    """Some files of a batch failed; each was already reported, the others were done."""

    def __init__(self, summary: Summary) -> None:
        n = summary.failed
        super().__init__(f"{n} of {summary.total} file{'s' if summary.total != 1 else ''} failed")
        self.summary = summary
        self.exit_code = summary.exit_code


# -- planning: which output each input gets --------------------------------------------
@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def image_suffixes() -> set[str]:
    """Extensions Pillow can open, without .aec (aecodec.pillow registers it)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN} - {AEC_SUFFIX}


def _prepare(pairs: Iterable[tuple[Path, Path]], force: bool) -> tuple[list[Job], list[Outcome]]:
    """Jobs to run, and the refusals found before any work: an output that is its input,
    or that another input of the batch (or another input's output) already claims; an output
    that is another input is refused only where it would be written (new, or --force)."""
    pairs = list(pairs)
    inputs = {p[0].resolve(): p[0] for p in pairs}
    jobs: list[Job] = []
    refused: list[Outcome] = []
    seen_src: set[Path] = set()
    claimed: dict[Path, Path] = {}
    for src, dst in pairs:
        rs, rd = src.resolve(), dst.resolve()
        if rs in seen_src:  # the same file named twice: do it once
            continue
        seen_src.add(rs)
        why = None
        if rd == rs:
            why = f"{src}: output {dst} is the input file"
        elif rd in inputs and (force or not dst.exists()):
            why = f"{src}: output {dst} is another input of this batch ({inputs[rd]})"
        elif rd in claimed:
            why = f"{src}: output {dst} is also the output of {claimed[rd]} (rename one of them)"
        if why:
            refused.append(Outcome(src, dst, "failed", error=why, exit_code=UsageError.exit_code))
            continue
        claimed[rd] = src
        jobs.append(Job(src, dst))
    return jobs, refused


def _make_folders(jobs: Sequence[Job]) -> None:
    for parent in sorted({j.dst.parent for j in jobs}):
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"{parent}: exists and is not a folder") from None
        except OSError as exc:
            raise OutputError(f"{parent}: cannot create folder ({exc.strerror or exc})") from None


def _remove_stale_parts(jobs: Sequence[Job]) -> int:
    """Delete ``.NAME.*.part`` files of this batch's outputs: write_atomic's temporaries,
    left only if a run was killed (SIGKILL, power loss) mid-write. Another run writing the
    same output at this moment would lose its temporary and report that file as failed."""
    targets: dict[Path, set[str]] = {}
    for j in jobs:
        targets.setdefault(j.dst.parent, set()).add(j.dst.name)
    removed = 0
    for folder, names in targets.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".part") and \
                    e.name[1:-5].rpartition(".")[0] in names:
                try:
                    os.unlink(e.path)
                    removed += 1
                except OSError:
                    pass
    return removed


def _output_suffix(fmt: str) -> str:
    from .imageio import output_format

    suffix = "." + fmt.lower().lstrip(".")
    if suffix == AEC_SUFFIX:
        raise UsageError("--format aec: decoding writes images (to re-encode, use encode)")
    output_format(Path("x" + suffix))  # UsageError for an unknown format
    return suffix


# -- per-file work (in this process or in a worker) -------------------------------------
@dataclass
class _Task:
    """One kind of per-file work with its options; picklable, so workers get a copy."""

    kind: str  # "encode" or "decode"
    model: object  # a Codec (in-process), a name or path for load(), an exported model's bytes,
    # or None (decode: the shipped model each file names)
    target: dict = field(default_factory=dict)  # encode: Codec.compress's quality, refine, bpp, psnr, beam
    stages: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        self._codec = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_codec"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._codec = None

    def codec(self, data: bytes | None = None):
        from .codec import Codec, codec_for, load
        from .model import AutoEncoder

        if self.model is None:
            return codec_for(data)  # shipped models are cached by load()
        if isinstance(self.model, Codec):
            return self.model
        if self._codec is None:
            self._codec = (Codec(AutoEncoder.from_bytes(self.model)) if isinstance(self.model, bytes)
                           else load(self.model))
        return self._codec

    def __call__(self, job: Job) -> Outcome:
        src, dst = job.src, job.dst
        if dst.exists() and not self.force:
            return Outcome(src, dst, "skipped")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                o = self._encode(job) if self.kind == "encode" else self._decode(job)
            o.notes = [f"{src}: {w.message}" for w in caught]
            return o
        except UsageError as exc:
            if not self.force and dst.exists():  # appeared meanwhile (another run): not ours to replace
                return Outcome(src, dst, "skipped")
            return Outcome(src, dst, "failed", error=about(src, exc), exit_code=exc.exit_code)
        except AecError as exc:
            return Outcome(src, dst, "failed", error=about(src, exc), exit_code=exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - a bug or a Pillow oddity: report it, go on
            return Outcome(src, dst, "failed", error=about(src, exc), exit_code=1)

    def _encode(self, job: Job) -> Outcome:
        from .imageio import open_image, write_atomic

        codec = self.codec()
        img = open_image(job.src)
        data = codec.compress(img, **self.target)
        write_atomic(job.dst, data, overwrite=self.force)
        size = job.src.stat().st_size
        return Outcome(job.src, job.dst, "done", size, len(data), len(data), img.width * img.height)

    def _decode(self, job: Job) -> Outcome:
        from .imageio import image_bytes, write_atomic

        with reading(job.src, FormatError):
            data = job.src.read_bytes()
        img = self.codec(data).decompress(data, stages=self.stages)
        out = image_bytes(img, job.dst)
        write_atomic(job.dst, out, overwrite=self.force)
        return Outcome(job.src, job.dst, "done", len(data), len(out), len(data), img.width * img.height)


# -- running: in this process or in a pool ----------------------------------------------
_WORKER_TASK: _Task | None = None
_WORKER_BUSY = threading.Lock()  # held while a file is worked on
_WORKER_STOP = threading.Event()


def _init_worker(task: _Task) -> None:
    """Worker setup: one torch thread (the pool is the parallelism). A worker never stops in
    the middle of a file: Ctrl-C is the parent's to handle (ignored here), and on kill
    (SIGTERM: the pool's own cleanup after a crash, or a signal to the whole group) or when
    the parent has died (SIGKILL), it finishes the file it is on, then exits."""
    global _WORKER_TASK
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    torch.set_num_threads(1)
    _WORKER_TASK = task
    parent = multiprocessing.parent_process()
    threading.Thread(target=_worker_watchdog, args=(parent.sentinel if parent else None,), daemon=True).start()


def _worker_sigterm(signum, frame) -> None:  # noqa: ARG001
    if not _WORKER_BUSY.locked():  # idle (waiting for work): nothing to finish
        os._exit(1)
    _WORKER_STOP.set()


def _worker_watchdog(parent_sentinel: int | None) -> None:
    from multiprocessing.connection import wait as wait_ready

    while not _WORKER_STOP.is_set():
        if parent_sentinel is None:
            _WORKER_STOP.wait(0.1)
        elif wait_ready([parent_sentinel], timeout=0.1):
            break  # the parent has ended, however it ended
    time.sleep(0.2)  # let a just-finished file's result reach the parent
    with _WORKER_BUSY:
        os._exit(1)


def _run_in_worker(job: Job) -> Outcome:
    assert _WORKER_TASK is not None
    with _WORKER_BUSY:
        return _WORKER_TASK(job)


def _run(task: _Task, pairs: Iterable[tuple[Path, Path]], workers: int, progress: bool) -> Summary:
    jobs, refused = _prepare(pairs, task.force)
    summary = Summary()
    _make_folders(jobs)
    summary.stale_removed = _remove_stale_parts(jobs)
    todo = [j for j in jobs if task.force or not j.dst.exists()]
    summary.skipped = len(jobs) - len(todo)

    from tqdm import tqdm

    from .imageio import ConversionNote

    bar = tqdm(total=len(jobs) + len(refused), initial=summary.skipped, unit="file", desc=task.kind,
               file=sys.stderr, disable=not progress, dynamic_ncols=True)

    def say(line: str) -> None:
        if progress:
            bar.write(line, file=sys.stderr)

    def record(o: Outcome) -> None:
        summary.add(o)
        for note in o.notes:
            if progress:
                say(f"aecodec: note: {note}")
            else:
                warnings.warn(note, ConversionNote, stacklevel=4)
        if o.error:
            say(f"aecodec: error: {o.error}")
        bar.update()

    if summary.stale_removed:
        say(f"aecodec: note: removed {summary.stale_removed} temporary file(s) left by an interrupted run")
    try:
        for o in refused:
            record(o)
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                record(task(job))
        else:
            _run_pool(task, todo, min(workers, len(todo)), record)
    except KeyboardInterrupt:
        bar.close()
        if progress:
            print(f"aecodec: stopped with {summary} (run the same command again to finish)", file=sys.stderr)
        raise
    bar.close()
    return summary


def _run_pool(task: _Task, todo: list[Job], workers: int, record: Callable[[Outcome], None]) -> None:
    """Run ``todo`` on worker processes, one file per worker at a time: after Ctrl-C each
    worker finishes the file it is on (counted in the summary) and takes no other.

    If a worker dies (killed, out of memory) the pool is lost with the files in flight; those
    are tried once more on a fresh pool, so only a file that kills its worker twice fails.
    """
    queue = deque(todo)
    retried: set[Job] = set()
    ctx = multiprocessing.get_context("spawn")  # fork after torch started threads can hang

    def fill(pool: ProcessPoolExecutor, pending: dict[Future, Job]) -> None:
        while len(pending) < workers and queue:
            job = queue.popleft()
            pending[pool.submit(_run_in_worker, job)] = job

    def lost(job: Job) -> None:
        if job in retried:
            record(Outcome(job.src, job.dst, "failed", exit_code=1,
                           error=f"{job.src}: a worker process died twice on this file (out of memory?)"))
        else:
            retried.add(job)
            queue.appendleft(job)

    while queue:  # one pool, or a fresh one after a worker died
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(task,))
        pending: dict[Future, Job] = {}
        try:
            with _worker_start_signals():  # the first submits start the workers
                fill(pool, pending)
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = False
                for fut in finished:
                    job = pending.pop(fut)
                    try:
                        record(fut.result())
                    except BrokenProcessPool:
                        broken = True
                        lost(job)
                if broken:  # the other files in flight went down with the pool
                    for job in pending.values():
                        lost(job)
                    pending.clear()
                    break
                fill(pool, pending)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            for fut in pending:  # finished while we waited: done, and so counted
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    record(fut.result())
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _worker_start_signals() -> Iterator[None]:
    """While worker processes start. Ctrl-C is ignored, and they inherit "ignored" from their
    first instruction on (before Python and torch load), so only the parent reacts to it. Kill
    (SIGTERM) is deferred in the parent, by a handler, so workers start with its default: a
    worker killed before it is ready just ends. The pool's cleanup after a crash kills the other
    workers and waits for them, and an ignored SIGTERM would make it wait forever."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred: list[int] = []
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: deferred.append(signum))}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in deferred:
            signal.raise_signal(s)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, ``kill`` (SIGTERM) stops the program as Ctrl-C does, so cleanup runs
    (temporary files removed, workers finish the file they write). Main thread only."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


# -- the API ----------------------------------------------------------------------------
def _workers(workers: int) -> int:
    return (os.cpu_count() or 1) if workers <= 0 else workers


def _resolve_model(model: ModelSpec | None, workers: int):
    """Load the model once, before any work (a ModelError now, not once per file); return the
    codec and what the task carries: the codec itself in-process, a name, path or the
    model's bytes for worker processes."""
    from .codec import Codec, load

    if model is None:
        return None, None
    codec = model if isinstance(model, Codec) else load(model)
    if workers == 1:
        return codec, codec
    if isinstance(model, Codec):
        return codec, model.model.to_bytes()
    return codec, model if isinstance(model, str) else os.fspath(model)


def _encode(pairs: list[tuple[Path, Path]], target: dict, model: ModelSpec, workers: int,
            force: bool, progress: bool) -> Summary:
    workers = _workers(workers)
    codec, spec = _resolve_model(model, workers)
    codec.check_target(**target)  # a bad target is a usage error before any work
    return _run(_Task("encode", spec, target=target, force=force), pairs, workers, progress)


def _decode(pairs: list[tuple[Path, Path]], model: ModelSpec | None, stages: int | None,
            workers: int, force: bool, progress: bool) -> Summary:
    if stages is not None and stages < 1:
        raise UsageError(f"cannot decode {stages} stages")
    workers = _workers(workers)
    _, spec = _resolve_model(model, workers)
    return _run(_Task("decode", spec, stages=stages, force=force), pairs, workers, progress)


def compress_files(inputs: Iterable[PathLike], dst: PathLike, quality: int | None = None,
                   model: ModelSpec = "rvq", workers: int = 1, force: bool = False,
                   progress: bool = False, **target: float | None) -> Summary:
    """Compress each input image to ``dst/<stem>.aec``; what ``aecodec encode ... -o DIR`` runs.

    ``workers`` > 1 runs that many processes (0: one per CPU core). Failures are collected in
    the Summary (``summary.check()`` raises if any); ``progress`` draws a bar on stderr and
    reports each failure there as it happens. ``target`` takes Codec.compress's ``refine``,
    ``bpp`` or ``psnr``, and ``beam``, applied to every image.
    """
    out = Path(dst)
    pairs = [(Path(p), out / (Path(p).stem + AEC_SUFFIX)) for p in inputs]
    return _encode(pairs, _target(quality, target), model, workers, force, progress)


def _target(quality: int | None, target: dict) -> dict:
    unknown = set(target) - {"refine", "bpp", "psnr", "beam"}
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}")
    return {"quality": quality} | {k: v for k, v in target.items() if v is not None}


def compress_folder(src: PathLike, dst: PathLike, quality: int | None = None, model: ModelSpec = "rvq",
                    workers: int = 1, force: bool = False, pattern: str = "*",
                    progress: bool = False, **target: float | None) -> Summary:
    """Compress the images in ``src`` matching ``pattern`` to ``.aec`` files in ``dst``
    (``target`` as for ``compress_files``).

    Only files Pillow can open are taken (not hidden files, not .aec), so ``"*"`` works on a
    folder of mixed files; a recursive pattern (``"**/*.jpg"``) mirrors subfolders in ``dst``.
    """
    src_dir = _folder(src)
    suffixes = image_suffixes()
    files = [p for p in sorted(src_dir.glob(pattern))
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes]
    out = Path(dst)
    pairs = [(p, out / p.relative_to(src_dir).with_suffix(AEC_SUFFIX)) for p in files]
    return _encode(pairs, _target(quality, target), model, workers, force, progress)


def decompress_files(inputs: Iterable[PathLike], dst: PathLike, format: str = "png",  # noqa: A002
                     model: ModelSpec | None = None, stages: int | None = None, workers: int = 1,
                     force: bool = False, progress: bool = False) -> Summary:
    """Decode each .aec input to ``dst/<stem>.<format>``; what ``aecodec decode ... -o DIR`` runs.

    ``model`` None decodes each file with the shipped model its header names; ``stages``
    decodes only that many stages (a quick preview).
    """
    suffix = _output_suffix(format)
    out = Path(dst)
    pairs = [(Path(p), out / (Path(p).stem + suffix)) for p in inputs]
    return _decode(pairs, model, stages, workers, force, progress)


def decompress_folder(src: PathLike, dst: PathLike, format: str = "png",  # noqa: A002
                      model: ModelSpec | None = None, stages: int | None = None, workers: int = 1,
                      force: bool = False, pattern: str = "*.aec", progress: bool = False) -> Summary:
    """Decode the .aec files in ``src`` matching ``pattern`` to images in ``dst``; a recursive
    pattern mirrors subfolders."""
    suffix = _output_suffix(format)
    src_dir = _folder(src)
    files = [p for p in sorted(src_dir.glob(pattern)) if p.is_file() and not p.name.startswith(".")]
    out = Path(dst)
    pairs = [(p, out / p.relative_to(src_dir).with_suffix(suffix)) for p in files]
    return _decode(pairs, model, stages, workers, force, progress)


def _folder(src: PathLike) -> Path:
    path = Path(src)
    if not path.is_dir():
        raise UsageError(f"{path}: not a folder")
    return path


ImageItem = Union[Image.Image, PathLike]


def iter_compress(images_or_paths: Iterable[ImageItem | tuple[Hashable, ImageItem]],
                  quality: int | None = None, model: ModelSpec = "rvq",
                  batch_size: int = 8) -> Iterator[tuple[Hashable, bytes]]:
    """Yield ``(key, .aec bytes)`` for each item, in order, reading only ``batch_size`` ahead,
    so a dataset far larger than memory streams through.

    Items are PIL images (key: their index), paths (key: the path as given) or
    ``(key, image_or_path)`` pairs. Same-size images within a window go through the network
    together (Codec.compress_batch), which is faster on a GPU or many cores; each result is a
    complete .aec file, and with ``batch_size=1`` exactly what ``Codec.compress`` returns.
    The model and quality are checked now; an unreadable path raises ImageError when reached.
    """
    from .codec import Codec, load

    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    codec = model if isinstance(model, Codec) else load(model)
    codec.level_for(quality)
    return _iter_compress(codec, images_or_paths, quality, batch_size)


def _iter_compress(codec: Codec, items: Iterable, quality: int | None,
                   batch_size: int) -> Iterator[tuple[Hashable, bytes]]:
    from .imageio import open_image

    window: list[tuple[Hashable, ImageItem]] = []

    def flush() -> Iterator[tuple[Hashable, bytes]]:
        images = [item if isinstance(item, Image.Image) else open_image(Path(item)) for _, item in window]
        blobs = codec.compress_batch(images, quality, batch_size=batch_size)
        keys = [k for k, _ in window]
        window.clear()
        yield from zip(keys, blobs)

    for i, item in enumerate(items):
        if isinstance(item, tuple):
            key, item = item
        else:
            key = i if isinstance(item, Image.Image) else item
        window.append((key, item))
        if len(window) == batch_size:
            yield from flush()
    if window:
        yield from flush()
