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

from .errors import FormatError
from .imageio import MAX_PIXELS, MODES

MAGIC = b"\x89AEC"
VERSION = 1
FLAG_ALPHA = 0x01
FLAG_REFINE = 0x02
MAX_SECTIONS = 255
_MODEL_ID = re.compile(rb"[a-z0-9][a-z0-9_.-]{0,31}")
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


def write(f: AecFile) -> bytes:
    h = f.header
    if len(f.sections) != h.sections or not 1 <= h.sections <= MAX_SECTIONS:
        raise ValueError("section count does not match the header")
    model = h.model.encode("ascii")
    extras = [x for x in (f.refinement, f.alpha) if x is not None]
    flags = (FLAG_ALPHA if f.alpha is not None else 0) | (FLAG_REFINE if f.refinement is not None else 0)
    head = bytearray(MAGIC + bytes([VERSION, flags, len(model)]) + model)
    head += _FIXED.pack(h.fingerprint, h.width, h.height, MODES.index(h.mode), h.sections)
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
    if version != VERSION:
        raise FormatError(f"format version {version} is not supported (this aecodec reads version {VERSION})")
    if flags & ~(FLAG_ALPHA | FLAG_REFINE):
        raise FormatError(f"unknown flags 0x{flags:02x} in header")
    pos = 7 + id_len
    if len(data) < pos + _FIXED.size:
        raise FormatError("truncated .aec header")
    model = bytes(view[7:pos])
    if not _MODEL_ID.fullmatch(model):
        raise FormatError("invalid model id in header")
    fingerprint, width, height, mode, n_sec = _FIXED.unpack_from(data, pos)
    pos += _FIXED.size
    n_len = n_sec + (1 if flags & FLAG_ALPHA else 0) + (1 if flags & FLAG_REFINE else 0)
    if len(data) < pos + 4 * n_len + 4:
        raise FormatError("truncated .aec header")
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
    header = Header(model.decode("ascii"), fingerprint, width, height, MODES[mode], n_sec)
    alpha = chunks.pop() if flags & FLAG_ALPHA else None
    refinement = chunks.pop() if flags & FLAG_REFINE else None
    return AecFile(header, chunks, alpha, refinement)


def first_stages(f: AecFile, sections: int) -> AecFile:
    """The file with only its first ``sections`` stages and no refinement (which refines the
    image of all the stages): exactly what the encoder writes at that stage count, because
    stage s never depends on later stages."""
    if not 1 <= sections <= f.header.sections:
        raise FormatError(f"cannot keep {sections} of the file's {f.header.sections} stages")
    return AecFile(replace(f.header, sections=sections), f.sections[:sections], f.alpha)


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
