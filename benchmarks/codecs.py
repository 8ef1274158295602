"""The codecs under test, behind one small interface: a list of operating points, and bytes in
and out. Classical codecs run through Pillow (and the pillow-jxl-plugin for JPEG XL); aecodec
models through the public API, exactly as a user would call them.

Every codec names what its results depend on (``identity``: library versions, fixed options,
model fingerprint), so cached results are reused only while that stays the same.
"""

from __future__ import annotations

import importlib.metadata
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, features

try:  # AVIF is built into Pillow since 11.3
    from PIL import AvifImagePlugin
except ImportError:
    AvifImagePlugin = None  # type: ignore[assignment]
try:  # registers the "JXL" format with Pillow
    from pillow_jxl import JpegXLImagePlugin
except ImportError:  # JPEG XL is optional: the benchmark skips it with a warning
    JpegXLImagePlugin = None  # type: ignore[assignment]

Params = dict[str, Any]


class BenchCodec(Protocol):
    name: str

    def identity(self) -> dict[str, Any]:
        """Everything besides the point's params and the image that the results depend on."""

    def points(self) -> list[Params]:
        """The operating points swept, lowest rate first."""

    def fine_points(self) -> list[Params]:
        """Every setting in the swept range, lowest rate first, to hit a given rate closely."""

    def encode(self, image: Image.Image, params: Params) -> bytes:
        """A complete file, so that its size is the real cost of the image."""

    def decode(self, data: bytes) -> Image.Image:
        """The decoded RGB image."""


def point_label(params: Params) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


@dataclass
class PillowCodec:
    """A codec Pillow writes: ``options`` are fixed, ``sweep`` values one option over points."""

    name: str
    format: str
    version: str
    sweep: str
    values: tuple[int, ...]
    options: Params = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "version": self.version, "options": self.options}

    def points(self) -> list[Params]:
        return [{self.sweep: v} for v in self.values]

    def fine_points(self) -> list[Params]:
        return [{self.sweep: v} for v in range(min(self.values), max(self.values) + 1)]

    def encode(self, image: Image.Image, params: Params) -> bytes:
        buf = io.BytesIO()
        image.save(buf, self.format, **self.options, **params)
        return buf.getvalue()

    def decode(self, data: bytes) -> Image.Image:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")


class AecodecCodec:
    """An aecodec model at each of its quality levels; with ``beam`` > 1, encoding with that
    beam search (a curve of its own)."""

    def __init__(self, model: str | Path, beam: int = 1) -> None:
        import aecodec  # torch is heavy: only the runner's main process needs it

        self.codec = aecodec.load(model)
        self.source = str(model)
        self.beam = beam
        path = Path(str(model))
        shipped = path.suffix != ".safetensors"
        self.name = f"aecodec {self.codec.name}" if shipped else f"aecodec {path.parent.name}/{path.stem}"
        self.name += f", beam {beam}" if beam > 1 else ""
        self._version = aecodec.__version__

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self._version, "fingerprint": self.codec.fingerprint.hex()}

    def points(self) -> list[Params]:
        return [{"quality": q} for q in self.codec.quality_levels]

    fine_points = points

    def encode(self, image: Image.Image, params: Params) -> bytes:
        return self.codec.compress(image, **params, beam=self.beam)

    def decode(self, data: bytes) -> Image.Image:
        return self.codec.decompress(data).convert("RGB")


ANCHOR = "JPEG 4:2:0"
"""The codec every other is compared against (BD-rate), as in most image-codec papers: Pillow's
JPEG with optimised Huffman tables."""
PLAIN_JPEG = "JPEG 4:2:0, default tables"
"""Pillow's JPEG as ``save(f, quality=q)`` writes it, with the standard Huffman tables: the JPEG
curve CompressAI publishes for Kodak, and the second anchor of the summary. On Kodak it needs
57% more bits than ANCHOR at quality 5 and 28% more at 10: at low rates the standard tables
waste much of the file."""

AVIF_SPEED = 4
"""aom's speed (0 slowest .. 10): 4 takes ~1.5 s per Kodak image and point on one core, 7x
libavif's default of 6, for 10 % fewer bits at the same PSNR (measured on two Kodak images):
a weaker AVIF would flatter the learned codecs. Slower speeds would dominate the run."""


def classical_codecs() -> list[PillowCodec]:
    """The classical codecs this Pillow build supports, each swept over ~10-12 points that
    cover ~0.1 to ~4 bpp on Kodak; a missing one is skipped with a warning."""
    turbo = features.check_feature("libjpeg_turbo")
    jpeg = f"libjpeg-turbo {features.version_feature('libjpeg_turbo')}" if turbo else \
        f"libjpeg {features.version('jpg')}"
    quality = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
    codecs = [
        PillowCodec(ANCHOR, "JPEG", jpeg, "quality", quality, {"subsampling": 2, "optimize": True}),
        PillowCodec(PLAIN_JPEG, "JPEG", jpeg, "quality", quality, {"subsampling": 2}),
        PillowCodec("JPEG 4:4:4", "JPEG", jpeg, "quality", quality, {"subsampling": 0, "optimize": True}),
    ]
    if features.check("webp"):
        # WebP's lowest rate is ~0.12 bpp at quality 0 (JPEG's: ~0.2 at 5).
        codecs.append(PillowCodec("WebP", "WEBP", f"libwebp {features.version('webp')}", "quality",
                                  (0, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95), {"method": 6}))
    else:
        warnings.warn("Pillow has no WebP support: WebP skipped", stacklevel=2)
    if AvifImagePlugin is not None and features.check("avif"):
        # 4:4:4, avifenc's default: ~4 % fewer bits than Pillow's default 4:2:0 at equal RGB PSNR.
        codecs.append(PillowCodec("AVIF", "AVIF", f"libavif {features.version('avif')} ({_avif_codecs()})",
                                  "quality", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90),
                                  {"speed": AVIF_SPEED, "subsampling": "4:4:4", "max_threads": 1}))
    else:
        warnings.warn("Pillow has no AVIF support (Pillow >= 11.3 builds it in): AVIF skipped", stacklevel=2)
    if JpegXLImagePlugin is not None:
        # The plugin maps quality to libjxl's butteraugli distance as cjxl does (90 -> 1.0).
        plugin = f"pillow-jxl-plugin {importlib.metadata.version('pillow-jxl-plugin')}"
        codecs.append(PillowCodec("JPEG XL", "JXL", plugin, "quality", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                                  {"effort": 7, "num_threads": 1}))
    else:
        warnings.warn("pillow-jxl-plugin is not installed: JPEG XL skipped", stacklevel=2)
    return codecs


def single_threaded_decoders() -> None:
    """Decode AVIF and JPEG XL on one thread, like the other codecs, so that the timings of
    parallel workers compare codecs rather than how many idle cores each grabs."""
    if AvifImagePlugin is not None:
        AvifImagePlugin.DEFAULT_MAX_THREADS = 1
    if JpegXLImagePlugin is not None:
        JpegXLImagePlugin.DECODE_THREADS = 0


def _avif_codecs() -> str:
    versions = getattr(AvifImagePlugin._avif, "codec_versions", None)  # private, so optional
    return versions() if versions else "codecs unknown"
