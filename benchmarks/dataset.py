"""The images a benchmark runs on. Each is known by the hash of its file, so cached results
follow the content: a renamed or replaced file is neither mistaken for nor hidden by another."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

EXTENSIONS = (".png", ".ppm", ".bmp", ".tif", ".tiff")
"""Lossless formats only: a lossy reference would already carry another codec's artifacts."""


@dataclass(frozen=True)
class ImageFile:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def list_images(folder: Path, limit: int | None = None) -> list[ImageFile]:
    """The first ``limit`` (all if None) lossless images of ``folder``, sorted by name."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTENSIONS)
    if not paths:
        raise SystemExit(f"{folder}: no {'/'.join(EXTENSIONS)} images")
    return [ImageFile(p, hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths[:limit]]


@functools.lru_cache(maxsize=4)
def load_rgb(path: Path) -> Image.Image:
    """The image as 8-bit RGB, kept for the next few points (tasks come grouped by image)."""
    with Image.open(path) as img:
        return img.convert("RGB")
