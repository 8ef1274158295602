"""The codec: PIL images <-> .aec bytes with a trained model. This is the public API.

Data flows one way: image -> planes -> padded tensor -> latent -> symbols -> bytes, and back.
"""

from __future__ import annotations

import bisect
import functools
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import bitstream, imageio, refine
from .errors import FormatError, ModelError, UsageError
from .imageio import Planes, colour_of, from_planes, pad_to_stride, to_planes
from .metrics import psnr_arrays
from .model import AutoEncoder
from .transforms import STRIDE, TILE, analyse, synthesise

WEIGHTS = Path(__file__).parent / "weights"
SAMPLE = Path(__file__).parent / "data" / "sample.png"
"""A 384x256 crop of Kodak image 23, released by Kodak for unrestricted use."""
DEFAULT_MODEL = "rvq"
UNDERSHOOT = 0.95
"""A ``--bpp`` file this far under its budget also tries the level below: one refinement step
can change a file by more than 5%, and the lower level's refinements fall in between. Only
then, because a level's own refinement usually buys more PSNR per bit than a lower level's
(choosing the larger of the two every time cost 0.2-0.3 dB on Kodak)."""
MAX_BEAM = 16
"""Widest beam search an encode may ask for: the quantizer's time grows about twice as fast
as the paths, and past four paths the files grow again (the rvq card)."""


def available_models() -> list[str]:
    """Names of the models shipped in the package."""
    return sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


@functools.lru_cache(maxsize=8)
def _load_shipped(name: str) -> Codec:
    return Codec(AutoEncoder.load(WEIGHTS / f"{name}.safetensors"))


def load(model: str | Path = DEFAULT_MODEL) -> Codec:
    """A codec for a shipped model name (``"rvq"``) or a path to an exported .safetensors."""
    if Path(str(model)).suffix == ".safetensors":
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        return Codec(AutoEncoder.load(path))
    return installed(str(model))


def installed(name: str) -> Codec:
    """The shipped model ``name``: what a file's header may name. Never a path, so a file
    cannot make the decoder load a model file planted beside it."""
    if name not in available_models():
        raise ModelError(f"unknown model {name!r} (installed: {', '.join(available_models()) or 'none'})")
    return _load_shipped(name)


@dataclass
class Info:
    model: str
    fingerprint: str
    width: int
    height: int
    mode: str
    sections: int  # coded sections (RVQ: stages)
    level: int | None  # the model's rate level, if the model is installed
    quality: int | None  # the quality level at that rate level, if any
    bytes: int
    refine: int | None = None  # the refinement layer's quantizer step, if the file has one

    @property
    def bpp(self) -> float:
        return 8 * self.bytes / (self.width * self.height)


class Codec:
    """One trained model, ready to compress and decompress. Safe to share between threads:
    inference touches no mutable state."""

    def __init__(self, model: AutoEncoder) -> None:
        self.model = model.eval()
        self.name: str = model.config.name
        self.fingerprint: bytes = model.fingerprint
        self.levels_per_quality: list[int] = list(model.config.qualities)
        """The bottleneck's rate level of each quality (RVQ: stages; VAE: gain vector)."""
        self.default_quality: int = model.config.default_quality

    @property
    def quality_levels(self) -> range:
        """The valid ``quality`` arguments, 1 (smallest files) upwards."""
        return range(1, len(self.levels_per_quality) + 1)

    def level_for(self, quality: int | None) -> int:
        q = self.default_quality if quality is None else quality
        if q not in self.quality_levels:
            raise UsageError(f"quality {q} is out of range for model {self.name} (1 to {self.quality_levels[-1]})")
        return self.levels_per_quality[q - 1]

    def quality_of(self, level: int) -> int | None:
        return self.levels_per_quality.index(level) + 1 if level in self.levels_per_quality else None

    # -- compression --------------------------------------------------------------------
    def compress(self, image: Image.Image, quality: int | None = None, *, refine: int | None = None,
                 bpp: float | None = None, psnr: float | None = None, beam: int = 1) -> bytes:
        """A complete .aec file for ``image``: at ``quality`` (1 = smallest), optionally with a
        refinement layer of step ``refine`` (see ``compress_batch``); or the largest file within
        ``bpp`` bits per pixel; or the smallest file whose PSNR reaches ``psnr`` dB. ``beam``
        (see ``compress_batch``) trades encoding time for bits."""
        self.check_target(quality, refine, bpp, psnr, beam)
        if bpp is None and psnr is None:
            return self.compress_batch([image], quality, refine=refine, beam=beam)[0]
        return self._compress_to(image, bpp, psnr, beam)

    def check_target(self, quality: int | None = None, refine: int | None = None,
                     bpp: float | None = None, psnr: float | None = None, beam: int = 1) -> None:
        """UsageError for a target that makes no sense, before any work is done."""
        if beam != 1 and not getattr(self.model.bottleneck, "beam_search", False):
            raise UsageError(f"model {self.name} chooses its codes directly: a beam search needs a model with "
                             "ECVQ codebooks (bottleneck rvq, such as denoise)")
        if not 1 <= beam <= MAX_BEAM:
            raise UsageError(f"beam {beam} is outside 1..{MAX_BEAM}")
        if bpp is None and psnr is None:
            self.level_for(quality)
            if refine is not None and not 1 <= refine <= 255:
                raise UsageError(f"refinement step {refine} is outside 1..255")
        elif sum(x is not None for x in (quality, refine, bpp, psnr)) > 1:
            raise UsageError("give one target: a quality (and refinement step), a bpp or a PSNR")
        else:
            target = bpp if bpp is not None else psnr
            if not (math.isfinite(target) and target > 0):
                raise UsageError(f"target {target} must be a positive number")

    @torch.inference_mode()
    def compress_batch(self, images: Sequence[Image.Image], quality: int | None = None,
                       batch_size: int = 8, refine: int | None = None, beam: int = 1) -> list[bytes]:
        """Compress many images; those of the same padded size go through the network together.
        ``refine`` adds a refinement layer with that quantizer step: no sample is then off by
        more than ``refine // 2`` (1 is lossless on the encoding machine). ``beam`` > 1 (rvq
        models) searches that many code paths through the stages instead of choosing stage by
        stage: smaller files for about 2 x ``beam`` times the quantizer's time (the rvq card
        measures both); decoding is unchanged."""
        self.check_target(quality, refine, beam=beam)
        level = self.level_for(quality)
        out: list[bytes | None] = [None] * len(images)
        for idx in _batches(images, lambda img: (_padded(img.size[::-1]),), batch_size):
            group = [to_planes(images[i]) for i in idx]  # converted a batch at a time
            x = pad_to_stride(torch.stack([p.rgb for p in group]), STRIDE)
            symbols = self.model.symbols(analyse(self.model.analyse, x), level, beam)
            bases = self._reconstruct(symbols, level, group) if refine else [None] * len(idx)
            for j, (i, p) in enumerate(zip(idx, group)):
                sections = self.model.entropy.encode(symbols[:, j], level)
                out[i] = self._container(p, sections, bases[j], refine)
        return out  # type: ignore[return-value]

    def _container(self, p: Planes, sections: list[bytes], base: np.ndarray | None = None,
                   step: int | None = None) -> bytes:
        """The file of ``sections``, with a refinement layer of ``step`` over ``base`` (the
        decoded colour planes) and the checksum of the refined pixels, if a step is given."""
        header = bitstream.Header(self.name, self.fingerprint, p.width, p.height,
                                  p.mode, len(sections))
        alpha = bitstream.pack_alpha(p.alpha) if p.alpha is not None else None
        refinement = checksum = None
        if step is not None:
            q = refine.quantize(p.colour, base, step)
            refinement, checksum = refine.encode(q, step), bitstream.pixels_crc(refine.apply(base, q, step))
        return bitstream.write(bitstream.AecFile(header, sections, alpha, refinement, checksum, p.icc, p.exif))

    def _reconstruct(self, symbols: np.ndarray, level: int,
                     planes: Sequence[Planes | bitstream.Header]) -> list[np.ndarray]:
        """Symbols (sections, B, ...) -> the decoded colour planes of each image, cropped."""
        x_hat = synthesise(self.model.synthesis, self.model.bottleneck.decode(symbols, level))
        return [colour_of(x_hat[j, :, : p.height, : p.width], p.mode) for j, p in enumerate(planes)]

    # -- rate control -------------------------------------------------------------------
    @torch.inference_mode()
    def _compress_to(self, image: Image.Image, bpp: float | None, psnr: float | None, beam: int = 1) -> bytes:
        """The largest file within ``bpp``, or the smallest reaching ``psnr``, searched over
        all the bottleneck's rate levels (not only the quality ladder): the image goes through
        the analysis once, and file size grows with the level. A refinement layer spends the
        bits the levels leave unused, or reaches a PSNR they cannot (or with fewer bytes)."""
        p = to_planes(image)
        levels = self.model.bottleneck.levels
        latent = analyse(self.model.analyse, pad_to_stride(p.rgb[None], STRIDE))
        symbols = functools.cache(lambda n: self.model.symbols(latent, n, beam))
        sections = functools.cache(lambda n: self.model.entropy.encode(symbols(n)[:, 0], n))
        base = functools.cache(lambda n: self._reconstruct(symbols(n), n, [p])[0])
        steps = range(1, 256)

        def file(n: int, step: int | None = None) -> bytes:
            return self._container(p, sections(n), base(n) if step else None, step)

        if bpp is not None:
            fits = lambda f: 8 * len(f) <= bpp * p.width * p.height
            n = bisect.bisect_left(range(1, levels + 1), True, key=lambda n: not fits(file(n)))
            if n == 0:
                raise UsageError(f"{bpp} bpp is below the smallest file ({8 * len(file(1)) / (p.width * p.height):.3f} bpp)")
            def best(m: int) -> bytes:  # level m with the finest refinement that fits
                i = bisect.bisect_left(steps, True, key=lambda step: fits(file(m, step)))
                return file(m, steps[i]) if i < len(steps) else file(m)

            found = best(n)
            if 8 * len(found) < UNDERSHOOT * bpp * p.width * p.height and n > 1:
                found = max(found, best(n - 1), key=len)
            return found

        def reaches(n: int, step: int | None = None) -> bool:
            decoded = base(n) if step is None else refine.apply(base(n), refine.quantize(p.colour, base(n), step), step)
            return psnr_arrays(p.colour, decoded) >= psnr

        n = 1 + bisect.bisect_left(range(1, levels + 1), True, key=reaches)
        candidates = [file(n)] if n <= levels else []
        # a lower level plus a refinement can be smaller; where no level reaches, only that can
        m = min(n - 1, levels)
        if m >= 1:
            i = bisect.bisect_left(steps, True, key=lambda step: not reaches(m, step))
            candidates.append(file(m, steps[max(i - 1, 0)]))  # step 1 is lossless, so it reaches
        return min(candidates, key=len)

    # -- decompression ------------------------------------------------------------------
    def decompress(self, data: bytes, stages: int | None = None) -> Image.Image:
        """The image of a .aec file, in the mode and size it was encoded with; ``stages``
        decodes only that many of the file's first stages (a quick preview)."""
        return self.decompress_batch([data], stages=stages)[0]

    @torch.inference_mode()
    def decompress_batch(self, blobs: Sequence[bytes], batch_size: int = 8,
                         stages: int | None = None) -> list[Image.Image]:
        files = [self._check(bitstream.read(b)) for b in blobs]
        if stages is not None:
            if stages < 1:
                raise UsageError(f"cannot decode {stages} stages")
            files = [f if stages >= f.header.sections else bitstream.first_stages(f, stages) for f in files]
        levels = [self.model.entropy.level_of(f.sections) for f in files]
        out: list[Image.Image | None] = [None] * len(files)
        key = lambda i: (_padded((files[i].header.height, files[i].header.width)), levels[i])
        for idx in _batches(range(len(files)), key, batch_size):
            # symbols and residuals are decoded a batch at a time, so memory follows the batch
            symbols = np.stack([self._symbols(files[i]) for i in idx], axis=1)
            colours = self._reconstruct(symbols, levels[idx[0]], [files[i].header for i in idx])
            del symbols
            for colour, i in zip(colours, idx):
                h = files[i].header
                residual = _residual(files[i])
                if residual is not None:
                    colour = refine.apply(colour, residual[1], residual[0])
                    _check_exact(colour, files[i], residual[0])
                alpha = None
                if files[i].alpha is not None:
                    raw = bitstream.unpack_alpha(files[i].alpha, h.width, h.height)
                    alpha = np.frombuffer(raw, np.uint8).reshape(h.height, h.width)
                out[i] = from_planes(colour, h.mode, alpha, files[i].icc, files[i].exif)
        return out  # type: ignore[return-value]

    def _check(self, f: bitstream.AecFile) -> bitstream.AecFile:
        h = f.header
        if h.width * h.height > imageio.MAX_DECODE_PIXELS:
            raise FormatError(f"file asks for a {h.width}x{h.height} image, more than the decoding limit of "
                              f"{imageio.MAX_DECODE_PIXELS} pixels (aecodec.imageio.MAX_DECODE_PIXELS)")
        if h.model != self.name:
            raise ModelError(f"file was encoded with model {h.model!r}, not {self.name!r}")
        if h.fingerprint != self.fingerprint:
            raise ModelError(
                f"file was encoded with other weights of model {h.model!r} "
                f"(fingerprint {h.fingerprint.hex()}, installed {self.fingerprint.hex()})"
            )
        if h.sections > self.model.bottleneck.sections:
            raise FormatError(f"file has {h.sections} sections, model {h.model!r} has {self.model.bottleneck.sections}")
        return f

    def _symbols(self, f: bitstream.AecFile) -> np.ndarray:
        hp, wp = _padded((f.header.height, f.header.width))
        return self.model.entropy.decode(f.sections, self.model.bottleneck.symbol_shape(hp // STRIDE, wp // STRIDE))

    def info(self, data: bytes) -> Info:
        return info(data, self)

    def truncate(self, data: bytes, quality: int | None = None, bpp: float | None = None) -> bytes:
        """Cut a file down to ``quality``, or to the most stages within ``bpp``, without
        re-encoding; byte-identical to compressing the image at that stage count."""
        f = self._check(bitstream.read(data))
        have = f.header.sections
        if (quality is None) == (bpp is None):
            raise UsageError("give exactly one target: quality or bpp")
        if bpp is not None and 8 * len(data) <= bpp * f.header.width * f.header.height:
            return data  # it fits as it is, refinement layer and all
        if self.model.bottleneck.sections == 1:
            raise UsageError(f"model {self.name} codes one section: its files cannot be truncated (re-encode instead)")
        if bpp is not None:
            cuts = [bitstream.write(bitstream.first_stages(f, n)) for n in range(1, have + 1)]
            fitting = [c for c in cuts if 8 * len(c) <= bpp * f.header.width * f.header.height]
            if not fitting:
                raise UsageError(f"{bpp} bpp is below the file's first stage ({8 * len(cuts[0]) / (f.header.width * f.header.height):.3f} bpp)")
            return fitting[-1]
        want = self.level_for(quality)
        if want > have:
            raise UsageError(f"quality {quality} needs {want} stages; the file has only {have}")
        return bitstream.write(bitstream.first_stages(f, want))


class InexactDecode(UserWarning):
    """A refined file decoded to other pixels than on the machine that encoded it."""


def _check_exact(colour: np.ndarray, f: bitstream.AecFile, step: int) -> None:
    """Compare refined pixels with the encoder's checksum: a lossless request (step 1) that
    this machine's float arithmetic cannot honour is an error, a lossy one a warning."""
    if f.pixels_crc is None or bitstream.pixels_crc(colour) == f.pixels_crc:
        return
    what = ("is not exact on this machine: its network output differs from the encoder's "
            "(another CPU, BLAS or torch), so the refined pixels differ from those it was made with")
    if step == 1:
        raise ModelError(f"lossless file {what}")
    warnings.warn(f"refined file {what}", InexactDecode, stacklevel=4)


def _residual(f: bitstream.AecFile) -> tuple[int, np.ndarray] | None:
    if f.refinement is None:
        return None
    h = f.header
    return refine.decode(f.refinement, 1 if h.mode in ("L", "LA") else 3, h.height, h.width)


def _padded(size: Iterable[int]) -> tuple[int, int]:
    h, w = size
    return (h + STRIDE - 1) // STRIDE * STRIDE, (w + STRIDE - 1) // STRIDE * STRIDE


BATCH_PIXELS = TILE * TILE // 2
"""Most padded pixels one batch puts through the network (half a tile: one Kodak-sized image,
or many thumbnails), whatever ``batch_size`` says, so peak memory depends on the image size and
not on how many images a call is given (benchmarks/batch_memory.py). Raise it on a GPU."""


def _batches(items: Sequence, key, batch_size: int) -> Iterable[list[int]]:
    """Indices of ``items`` grouped by ``key``, a tuple whose first entry is the padded (h, w),
    at most batch_size each and at most BATCH_PIXELS in all (but at least one image)."""
    groups: dict = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    for k, idx in groups.items():
        h, w = k[0]
        size = max(1, min(batch_size, BATCH_PIXELS // (h * w)))
        for start in range(0, len(idx), size):
            yield idx[start : start + size]


def info(data: bytes, codec: Codec | None = None) -> Info:
    """What a .aec file holds, validated; ``quality`` is looked up in its model if installed."""
    f = bitstream.read(data)
    h = f.header
    level = quality = None
    try:
        c = codec or installed(h.model)
        level = c.model.entropy.level_of(f.sections)
        quality = c.quality_of(level)
    except (ModelError, FormatError):
        pass
    return Info(h.model, h.fingerprint.hex(), h.width, h.height, h.mode, h.sections, level, quality, len(data),
                f.refinement[0] if f.refinement else None)


def decompress(data: bytes) -> Image.Image:
    """Decode a .aec file with the shipped model its header names."""
    return codec_for(data).decompress(data)


def codec_for(data: bytes) -> Codec:
    """The installed model a file's header names."""
    return installed(bitstream.read(data).header.model)
