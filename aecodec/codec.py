"""The codec: PIL images <-> .aec bytes with a trained model. This is the public API.

Data flows one way: image -> planes -> padded tensor -> latent -> symbols -> bytes, and back.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from . import bitstream
from .errors import FormatError, ModelError, UsageError
from .metrics import psnr as psnr_of
from .imageio import Planes, from_planes, pad_to_stride, to_planes
from .model import AutoEncoder
from .transforms import STRIDE, analyse, synthesise

WEIGHTS = Path(__file__).parent / "weights"
SAMPLE = Path(__file__).parent / "data" / "sample.png"
"""A 384x256 crop of Kodak image 23, released by Kodak for unrestricted use."""
DEFAULT_MODEL = "rvq"


def available_models() -> list[str]:
    """Names of the models shipped in the package."""
    return sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


@functools.lru_cache(maxsize=8)
def _load_shipped(name: str) -> "Codec":
    return Codec(AutoEncoder.load(WEIGHTS / f"{name}.safetensors"))


def load(model: str | Path = DEFAULT_MODEL) -> "Codec":
    """A codec for a shipped model name (``"rvq"``) or a path to an exported .safetensors."""
    if Path(str(model)).suffix == ".safetensors":
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        return Codec(AutoEncoder.load(path))
    if str(model) not in available_models():
        raise ModelError(f"unknown model {model!r} (installed: {', '.join(available_models()) or 'none'})")
    return _load_shipped(str(model))


@dataclass
class Info:
    model: str
    fingerprint: str
    width: int
    height: int
    mode: str
    stages: int
    quality: int | None  # the quality level with this many stages, if any
    bytes: int

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
        self.stages_per_quality: list[int] = list(model.config.qualities)
        self.default_quality: int = model.config.default_quality

    @property
    def quality_levels(self) -> range:
        """The valid ``quality`` arguments, 1 (smallest files) upwards."""
        return range(1, len(self.stages_per_quality) + 1)

    def stages_for(self, quality: int | None) -> int:
        q = self.default_quality if quality is None else quality
        if q not in self.quality_levels:
            raise UsageError(f"quality {q} is out of range for model {self.name} (1 to {self.quality_levels[-1]})")
        return self.stages_per_quality[q - 1]

    # -- compression --------------------------------------------------------------------
    def compress(self, image: Image.Image, quality: int | None = None) -> bytes:
        """A complete .aec file for ``image`` at ``quality`` (1 = smallest)."""
        return self.compress_batch([image], quality)[0]

    @torch.inference_mode()
    def compress_batch(self, images: Sequence[Image.Image], quality: int | None = None,
                       batch_size: int = 8) -> list[bytes]:
        """Compress many images; those of the same padded size go through the network together."""
        stages = self.stages_for(quality)
        planes = [to_planes(img) for img in images]
        out: list[bytes | None] = [None] * len(planes)
        for idx in _batches(planes, lambda p: _padded(p.rgb.shape[-2:]), batch_size):
            x = pad_to_stride(torch.stack([planes[i].rgb for i in idx]), STRIDE)
            symbols = self.model.bottleneck.encode(analyse(self.model.analysis, x), stages)
            for j, i in enumerate(idx):
                out[i] = self._pack(planes[i], symbols[:, j])
        return out  # type: ignore[return-value]

    def _pack(self, p: Planes, symbols: np.ndarray) -> bytes:
        return self._container(p, self.model.entropy.encode(symbols))

    def _container(self, p: Planes, sections: list[bytes]) -> bytes:
        header = bitstream.Header(self.name, self.fingerprint, p.rgb.shape[2], p.rgb.shape[1],
                                  p.mode, len(sections))
        alpha = bitstream.pack_alpha(p.alpha) if p.alpha is not None else None
        return bitstream.write(bitstream.AecFile(header, sections, alpha))

    # -- rate control -------------------------------------------------------------------
    @torch.inference_mode()
    def compress_to(self, image: Image.Image, bpp: float | None = None,
                    psnr: float | None = None) -> bytes:
        """The largest file within ``bpp`` bits per pixel, or the smallest whose PSNR reaches
        ``psnr`` dB. The image is encoded once: a file with fewer stages is a prefix of the
        stages (see ``truncate``), so every candidate costs only its container."""
        if (bpp is None) == (psnr is None):
            raise UsageError("give exactly one target: bpp or psnr")
        p = to_planes(image)
        symbols = self.model.bottleneck.encode(
            analyse(self.model.analysis, pad_to_stride(p.rgb[None], STRIDE)), self.model.bottleneck.sections
        )[:, 0]
        sections = self.model.entropy.encode(symbols)
        files = [self._container(p, sections[:n]) for n in range(1, len(sections) + 1)]
        pixels = p.rgb.shape[1] * p.rgb.shape[2]
        if bpp is not None:
            fitting = [f for f in files if 8 * len(f) <= bpp * pixels]
            if not fitting:
                raise UsageError(f"{bpp} bpp is below the smallest file ({8 * len(files[0]) / pixels:.3f} bpp)")
            return fitting[-1]
        return files[self._fewest_stages(symbols, p, psnr) - 1]

    def _fewest_stages(self, symbols: np.ndarray, p: Planes, target: float) -> int:
        """Binary search for the fewest stages whose decoded PSNR reaches ``target`` (PSNR
        grows with stages); all of them if none does."""
        reference = from_planes((p.rgb * 255).round().to(torch.uint8), p.mode, None)
        h, w = p.rgb.shape[1:]
        lo, hi = 1, len(symbols)
        while lo < hi:
            mid = (lo + hi) // 2
            decoded = synthesise(self.model.synthesis, self.model.bottleneck.decode(symbols[:mid, None]))
            if psnr_of(reference, from_planes(decoded[0, :, :h, :w], p.mode, None)) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

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
            files = [_first_stages(f, stages) for f in files]
        symbols = [self._symbols(f) for f in files]
        out: list[Image.Image | None] = [None] * len(files)
        key = lambda f: (_padded((f.header.height, f.header.width)), f.header.sections)  # noqa: E731
        for idx in _batches(files, key, batch_size):
            latent = self.model.bottleneck.decode(np.stack([symbols[i] for i in idx], axis=1))
            x_hat = synthesise(self.model.synthesis, latent)
            for j, i in enumerate(idx):
                h = files[i].header
                alpha = None
                if files[i].alpha is not None:
                    raw = bitstream.unpack_alpha(files[i].alpha, h.width, h.height)
                    alpha = np.frombuffer(raw, np.uint8).reshape(h.height, h.width)
                out[i] = from_planes(x_hat[j, :, : h.height, : h.width], h.mode, alpha)
        return out  # type: ignore[return-value]

    def _check(self, f: bitstream.AecFile) -> bitstream.AecFile:
        h = f.header
        if h.model != self.name:
            raise ModelError(f"file was encoded with model {h.model!r}, not {self.name!r}")
        if h.fingerprint != self.fingerprint:
            raise ModelError(
                f"file was encoded with other weights of model {h.model!r} "
                f"(fingerprint {h.fingerprint.hex()}, installed {self.fingerprint.hex()})"
            )
        if h.sections > self.model.bottleneck.sections:
            raise FormatError(f"file has {h.sections} stages, model {h.model!r} has {self.model.bottleneck.sections}")
        return f

    def _symbols(self, f: bitstream.AecFile) -> np.ndarray:
        hp, wp = _padded((f.header.height, f.header.width))
        flat = self.model.entropy.decode(f.sections, (hp // STRIDE) * (wp // STRIDE))
        return flat.reshape(len(f.sections), hp // STRIDE, wp // STRIDE)

    def info(self, data: bytes) -> Info:
        return info(data, self)

    def truncate(self, data: bytes, quality: int) -> bytes:
        """Cut a file down to ``quality`` without re-encoding; byte-identical to compressing
        the image at that quality."""
        have, want = self._check(bitstream.read(data)).header.sections, self.stages_for(quality)
        if want > have:
            raise UsageError(f"quality {quality} needs {want} stages; the file has only {have}")
        return bitstream.truncate(data, want)


def _first_stages(f: bitstream.AecFile, stages: int) -> bitstream.AecFile:
    n = min(stages, f.header.sections)
    return replace(f, header=replace(f.header, sections=n), sections=f.sections[:n])


def _padded(size: Iterable[int]) -> tuple[int, int]:
    h, w = size
    return (h + STRIDE - 1) // STRIDE * STRIDE, (w + STRIDE - 1) // STRIDE * STRIDE


def _batches(items: Sequence, key, batch_size: int) -> Iterable[list[int]]:
    """Indices of ``items`` grouped by ``key`` (same tensor shape), at most batch_size each."""
    groups: dict = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


def info(data: bytes, codec: Codec | None = None) -> Info:
    """What a .aec file holds, validated; ``quality`` is looked up in its model if installed."""
    h = bitstream.read(data).header
    quality = None
    try:
        c = codec or load(h.model)
        if h.sections in c.stages_per_quality:
            quality = c.stages_per_quality.index(h.sections) + 1
    except ModelError:
        pass
    return Info(h.model, h.fingerprint.hex(), h.width, h.height, h.mode, h.sections, quality, len(data))


def decompress(data: bytes) -> Image.Image:
    """Decode a .aec file with the shipped model its header names."""
    return codec_for(data).decompress(data)


def codec_for(data: bytes) -> Codec:
    return load(bitstream.read(data).header.model)
