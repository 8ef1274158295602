"""Images in and out: reading any Pillow image into the codec's RGB tensor, back to the
caller's mode, and writing files atomically so that no reader ever sees a partial output."""

from __future__ import annotations

import errno
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, OutputError, UsageError, reading

MAX_PIXELS = 1 << 26
"""Largest image (width * height) the codec reads or decodes, ~67 MP; raise it knowingly."""

MAX_DECODE_PIXELS = 1 << 25
"""Largest image (width * height) a file may ask the decoder for, ~33.5 MP, as Pillow's
MAX_IMAGE_PIXELS: a file of a few hundred bytes can name a size that takes gigabytes to decode.
Raise it (up to MAX_PIXELS) to decode larger files knowingly."""

MODES = ("L", "LA", "RGB", "RGBA")
"""Modes stored natively; the index in this tuple is the mode byte of the .aec header."""


class ConversionNote(UserWarning):
    """An input was converted to a mode the codec stores (palette, 16-bit, CMYK, ...)."""


@dataclass
class Planes:
    """An image as the codec sees it: the network's RGB input in [0, 1], the 8-bit colour
    planes it must reproduce, and an optional 8-bit alpha plane."""

    rgb: torch.Tensor  # (3, H, W) float32
    colour: np.ndarray  # (C, H, W) uint8: 1 plane for L/LA, 3 for RGB/RGBA
    mode: str  # one of MODES
    alpha: np.ndarray | None  # (H, W) uint8 for LA/RGBA
    icc: bytes | None = None  # ICC colour profile: without it a Display-P3 photo decodes in sRGB's colours
    exif: bytes | None = None  # EXIF block (orientation already applied by open_image)

    @property
    def height(self) -> int:
        return self.colour.shape[1]

    @property
    def width(self) -> int:
        return self.colour.shape[2]


def check_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{what}: empty image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{what}: {width}x{height} is more than the {MAX_PIXELS} pixel limit (aecodec.imageio.MAX_PIXELS)"
        )


def open_image(path: Path) -> Image.Image:
    """Read an image file fully, with EXIF orientation applied; ImageError on any failure."""
    with reading(path, ImageError):
        try:
            with Image.open(path) as img:
                check_size(*img.size, str(path))
                img.load()
                return ImageOps.exif_transpose(img)
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
        except (SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{path}: cannot read image ({exc})") from None


def _to_native(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to one of MODES, warning when information changes."""
    mode = img.mode
    if mode in MODES:
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            arr = _float_levels(arr)
        else:
            arr = arr / 257.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else arr
        out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        warnings.warn(f"{mode} image converted to 8-bit grayscale (L)", ConversionNote, stacklevel=3)
        return out
    has_alpha = mode in ("PA", "La", "RGBa") or "transparency" in img.info or mode.endswith("A")
    if mode == "1":
        target = "L"
    elif mode == "La":
        target = "LA"
    else:
        target = "RGBA" if has_alpha else "RGB"
    warnings.warn(f"{mode} image converted to {target}", ConversionNote, stacklevel=3)
    return img.convert(target)


def _float_levels(arr: np.ndarray) -> np.ndarray:
    """A float image's samples as 8-bit levels: [0, 1] is scaled by 255 (what float images
    from NumPy and tifffile mostly hold; rounding it directly would give a black image), [0,
    255] is taken as levels; anything else has no agreed meaning and is refused."""
    if not np.isfinite(arr).all():
        raise ImageError("mode F image has NaN or infinite samples")
    low, high = float(arr.min(initial=0)), float(arr.max(initial=0))
    if low >= 0 and high <= 1:
        return arr * 255
    if low >= 0 and high <= 255:
        return arr
    raise ImageError(f"mode F image has samples in [{low:g}, {high:g}]: expected [0, 1] or [0, 255]")


def to_planes(img: Image.Image) -> Planes:
    check_size(*img.size, "image")
    icc, exif = img.info.get("icc_profile") or None, img.info.get("exif") or None
    img = _to_native(img)
    arr = np.array(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = np.ascontiguousarray(arr[:, :, -1]) if img.mode in ("LA", "RGBA") else None
    colour = np.ascontiguousarray(arr[:, :, :1] if img.mode in ("L", "LA") else arr[:, :, :3])
    rgb = torch.from_numpy(colour).permute(2, 0, 1).float().expand(3, -1, -1) / 255.0
    return Planes(rgb, colour.transpose(2, 0, 1), img.mode, alpha,
                  icc if isinstance(icc, bytes) else None, exif if isinstance(exif, bytes) else None)


def colour_of(rgb: torch.Tensor, mode: str) -> np.ndarray:
    """The network's (3, H, W) uint8 output -> the colour planes (C, H, W) of ``mode``; gray
    is Pillow's ITU-R 601 luma of the RGB output."""
    arr = np.ascontiguousarray(rgb.permute(1, 2, 0).numpy())
    if mode in ("L", "LA"):
        return np.asarray(Image.fromarray(arr, "RGB").convert("L"))[None]
    return arr.transpose(2, 0, 1)


def from_planes(colour: np.ndarray, mode: str, alpha: np.ndarray | None,
                icc: bytes | None = None, exif: bytes | None = None) -> Image.Image:
    """Colour planes (C, H, W) uint8, alpha and metadata -> Pillow image in ``mode``."""
    arr = np.ascontiguousarray(colour.transpose(1, 2, 0))
    img = Image.fromarray(arr[:, :, 0], "L") if len(colour) == 1 else Image.fromarray(arr, "RGB")
    if alpha is not None:
        img = img.convert(mode)
        img.putalpha(Image.fromarray(alpha, "L"))
    if icc:
        img.info["icc_profile"] = icc
    if exif:
        img.info["exif"] = exif
    return img


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) on the bottom/right to a multiple of stride; cheaper to code
    than zeros because the padding continues the image instead of adding an edge."""
    h, w = x.shape[-2:]
    ph, pw = -h % stride, -w % stride
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


# -- writing ---------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write to a temporary file beside ``path``, then move it into place in one step.

    With ``overwrite=False`` the final step fails if ``path`` exists (``_move_new``), so a
    file that appeared meanwhile is never clobbered.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    except FileNotFoundError:
        raise OutputError(f"{path}: folder {path.parent} does not exist") from None
    except PermissionError:
        raise OutputError(f"{path}: permission denied") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide outputs from other users
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_new(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path}: exists (use --force to overwrite)") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV, errno.EACCES}
"""How link() fails on file systems without hard links (exFAT, FAT, some SMB and FUSE mounts)."""


def _move_new(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (FileExistsError), without a window in
    which another writer's file could be replaced. A hard link does it in one step; where the
    file system has none, creating ``path`` exclusively claims the name (an empty file, for the
    moment it takes), and the rename then replaces only that claim."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)


def output_format(path: Path) -> str:
    """The Pillow format an output's extension names (.png, .jpg, .webp, ...)."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"{path}: unknown image extension {Path(path).suffix!r} (try .png)")
    return fmt


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask can only be read by setting it


def image_bytes(img: Image.Image, path: Path) -> bytes:
    """Encode ``img`` in the format the extension of ``path`` names."""
    fmt = output_format(path)
    buf = io.BytesIO()
    metadata = {k: img.info[k] for k in ("icc_profile", "exif") if img.info.get(k)}  # PNG, JPEG, WebP, TIFF keep them
    try:
        img.save(buf, format=fmt, **metadata)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: cannot store a {img.mode} image as {fmt} ({exc})") from None
    return buf.getvalue()
