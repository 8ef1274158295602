"""The .aec container: bytes in, validated fields out (and back). See docs/FORMAT.md.

The reader trusts nothing: it checks the magic, version, every header field and the header's
CRC before it believes any length, checks that the lengths add up to the file size exactly,
and checks the payload CRC, all before anything is allocated for decoding.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np

from .errors import FormatError
from .imageio import MAX_PIXELS, MODES

MAGIC = b"\x89AEC"
VERSION = 2
"""The version this writer writes; the reader also reads version 1 (version 2 without its flags)."""
READABLE = (1, 2)
FLAG_ALPHA = 0x01
FLAG_REFINE = 0x02
FLAG_META = 0x04
"""Version 2: a metadata section (ICC profile, EXIF) follows the others."""
FLAG_CHECKSUM = 0x08
"""Version 2: the header holds a CRC-32 of the decoded colour planes the encoder expects."""
FLAGS = {1: FLAG_ALPHA | FLAG_REFINE, 2: FLAG_ALPHA | FLAG_REFINE | FLAG_META | FLAG_CHECKSUM}
MAX_SECTIONS = 255
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""A header names an installed model, never a path: no "." or "/", so no file name or suffix."""


def valid_model_id(name: str) -> bool:
    """Whether ``name`` can be stored as a header's model id."""
    return bool(_MODEL_ID.fullmatch(name))
_FIXED = struct.Struct("<8sIIBB")  # fingerprint, width, height, mode, sections


@dataclass
class Header:
    model: str
    fingerprint: bytes  # 8 bytes identifying the exact weights and tables
    width: int
    height: int
    mode: str  # one of imageio.MODES
    sections: int  # coded sections (RVQ stages), coarse to fine


@dataclass
class AecFile:
    header: Header
    sections: list[bytes]
    alpha: bytes | None  # zlib stream of the (height, width) alpha plane
    refinement: bytes | None = None  # pixel residual over all the stages (see aecodec.refine)
    pixels_crc: int | None = None
    """CRC-32 of the decoded colour planes on the encoding machine, so a decoder whose float
    arithmetic differs can say so instead of returning different pixels quietly."""
    icc: bytes | None = None  # the image's ICC colour profile, as Pillow gives it
    exif: bytes | None = None  # the image's EXIF block, as Pillow gives it


def pixels_crc(colour: np.ndarray) -> int:
    """The checksum a header stores of colour planes (C, H, W) uint8, in C order."""
    return zlib.crc32(np.ascontiguousarray(colour, dtype=np.uint8))


def _pack_meta(icc: bytes | None, exif: bytes | None) -> bytes:
    return b"".join(struct.pack("<I", len(x or b"")) + (x or b"") for x in (icc, exif))


def _unpack_meta(data: bytes) -> tuple[bytes | None, bytes | None]:
    """The metadata section's (ICC, EXIF); lengths must add up to the section exactly."""
    out, pos = [], 0
    for _ in range(2):
        if pos + 4 > len(data):
            raise FormatError("metadata section is truncated")
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise FormatError("metadata section is truncated")
        out.append(bytes(data[pos + 4 : pos + 4 + n]) or None)
        pos += 4 + n
    if pos != len(data):
        raise FormatError("metadata section has trailing bytes")
    return out[0], out[1]


def write(f: AecFile) -> bytes:
    h = f.header
    if len(f.sections) != h.sections or not 1 <= h.sections <= MAX_SECTIONS:
        raise ValueError("section count does not match the header")
    if not valid_model_id(h.model):
        raise ValueError(f"model name {h.model!r} cannot be stored in a header")
    model = h.model.encode("ascii")
    meta = _pack_meta(f.icc, f.exif) if f.icc or f.exif else None
    extras = [x for x in (f.refinement, f.alpha, meta) if x is not None]
    flags = (FLAG_ALPHA if f.alpha is not None else 0) | (FLAG_REFINE if f.refinement is not None else 0) | \
        (FLAG_META if meta is not None else 0) | (FLAG_CHECKSUM if f.pixels_crc is not None else 0)
    head = bytearray(MAGIC + bytes([VERSION, flags, len(model)]) + model)
    head += _FIXED.pack(h.fingerprint, h.width, h.height, MODES.index(h.mode), h.sections)
    if f.pixels_crc is not None:
        head += struct.pack("<I", f.pixels_crc)
    lengths = [len(s) for s in f.sections + extras]
    head += struct.pack(f"<{len(lengths)}I", *lengths)
    head += struct.pack("<I", zlib.crc32(head))
    payload = b"".join(f.sections + extras)
    return bytes(head) + payload + struct.pack("<I", zlib.crc32(payload))


def read(data: bytes) -> AecFile:
    """Parse and validate a whole .aec file; FormatError says what is wrong, in one line."""
    view = memoryview(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not an .aec file (wrong magic bytes)")
    if len(data) < 7:
        raise FormatError("truncated .aec header")
    version, flags, id_len = data[4], data[5], data[6]
    if version not in READABLE:
        raise FormatError(f"format version {version} is not supported (this aecodec reads versions "
                          f"{', '.join(map(str, READABLE))})")
    if flags & ~FLAGS[version]:
        raise FormatError(f"unknown flags 0x{flags:02x} in a version {version} header")
    pos = 7 + id_len
    if len(data) < pos + _FIXED.size:
        raise FormatError("truncated .aec header")
    model = bytes(view[7:pos]).decode("latin-1")
    if not valid_model_id(model):
        raise FormatError("invalid model id in header")
    fingerprint, width, height, mode, n_sec = _FIXED.unpack_from(data, pos)
    pos += _FIXED.size
    n_len = n_sec + sum(1 for flag in (FLAG_ALPHA, FLAG_REFINE, FLAG_META) if flags & flag)
    crc_len = 4 if flags & FLAG_CHECKSUM else 0
    if len(data) < pos + crc_len + 4 * n_len + 4:
        raise FormatError("truncated .aec header")
    expected = struct.unpack_from("<I", data, pos)[0] if crc_len else None
    pos += crc_len
    lengths = struct.unpack_from(f"<{n_len}I", data, pos)
    pos += 4 * n_len
    (crc,) = struct.unpack_from("<I", data, pos)
    if zlib.crc32(view[:pos]) != crc:
        raise FormatError("header checksum mismatch (corrupt file)")
    pos += 4
    if mode >= len(MODES):
        raise FormatError(f"unknown image mode {mode}")
    if (MODES[mode] in ("LA", "RGBA")) != bool(flags & FLAG_ALPHA):
        raise FormatError("alpha flag does not match the image mode")
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise FormatError(f"image size {width}x{height} is outside the limits (1 to {MAX_PIXELS} pixels)")
    if n_sec < 1:
        raise FormatError("file has no coded sections")
    if crc_len and not flags & FLAG_REFINE:
        raise FormatError("pixel checksum without a refinement section")
    if pos + sum(lengths) + 4 != len(data):
        kind = "truncated" if pos + sum(lengths) + 4 > len(data) else "has trailing bytes"
        raise FormatError(f"file {kind}: header promises {pos + sum(lengths) + 4} bytes, found {len(data)}")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(view[pos : len(data) - 4]) != crc:
        raise FormatError("payload checksum mismatch (corrupt file)")
    chunks = []
    for n in lengths:
        chunks.append(bytes(view[pos : pos + n]))
        pos += n
    header = Header(model, fingerprint, width, height, MODES[mode], n_sec)
    icc, exif = _unpack_meta(chunks.pop()) if flags & FLAG_META else (None, None)
    alpha = chunks.pop() if flags & FLAG_ALPHA else None
    refinement = chunks.pop() if flags & FLAG_REFINE else None
    return AecFile(header, chunks, alpha, refinement, expected, icc, exif)


def first_stages(f: AecFile, sections: int) -> AecFile:
    """The file with only its first ``sections`` stages and no refinement (which refines the
    image of all the stages) or checksum of it: exactly what the encoder writes at that stage
    count, because stage s never depends on later stages."""
    if not 1 <= sections <= f.header.sections:
        raise FormatError(f"cannot keep {sections} of the file's {f.header.sections} stages")
    return AecFile(replace(f.header, sections=sections), f.sections[:sections], f.alpha, icc=f.icc, exif=f.exif)


def truncate(data: bytes, sections: int) -> bytes:
    return write(first_stages(read(data), sections))


def pack_alpha(plane) -> bytes:
    return zlib.compress(plane.tobytes(), 9)


def unpack_alpha(data: bytes, width: int, height: int) -> bytes:
    """Inflate at most width*height bytes: a zlib bomb cannot allocate more than the image."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, width * height)
    except zlib.error as exc:
        raise FormatError(f"alpha section does not inflate ({exc})") from None
    if len(out) != width * height or not d.eof or d.unconsumed_tail:
        raise FormatError("alpha section has the wrong size")
    return out
