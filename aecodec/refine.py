"""The refinement layer: a pixel residual that takes a file past what the network can reach.

The autoencoder's reconstruction has a ceiling, but users ask for a file size or a PSNR, up to
near-lossless. The refinement quantizes the residual ``x - x_hat`` of the 8-bit colour planes
with a uniform step, so no sample is off by more than ``step // 2`` on the machine that encoded
it (step 1 is lossless there), and codes the result with two-sided geometric tables chosen per
context by the encoder. The contexts are integers the decoder already has, so the residual
decodes bit-exactly on every machine:

* a 16x16 block's activity class, coded first (class 0: the whole block is zero, so nothing
  else is coded for it);
* the magnitude of the previous colour channel at the same pixel (0, 1, 2 or more).

Section layout (docs/FORMAT.md): step (u8), class table (8 x u16 counts), one table byte per
(channel, class 1..7, previous-channel context), then the ANS words.
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from .entropy import (
    GEOMETRIC_STEPS,
    ans_bytes,
    ans_reader,
    categorical,
    code_lengths,
    geometric_tables,
    normalize_counts,
    pop_groups,
    push_groups,
)
from .errors import FormatError

BLOCK = 16
CLASSES = 8
PREVIOUS = 3
CONTEXTS = (CLASSES - 1) * PREVIOUS
"""Coded contexts per channel: (class - 1) * PREVIOUS + previous-channel magnitude."""
_ACTIVITY = np.array([1, 2, 4, 8, 16, 32])
"""Class of a non-zero block: 1 + how many of these 4 * mean |q| reaches (integers only)."""


def quantize(original: np.ndarray, base: np.ndarray, step: int) -> np.ndarray:
    """Residual symbols (C, H, W) int16: ``x - x_hat`` rounded to the nearest multiple of step."""
    e = original.astype(np.int16) - base
    return np.sign(e) * ((np.abs(e) + step // 2) // step)


def apply(base: np.ndarray, q: np.ndarray, step: int) -> np.ndarray:
    """The refined colour planes; clipping only ever moves a sample towards the original."""
    return np.clip(base.astype(np.int16) + q * step, 0, 255).astype(np.uint8)


def _half(step: int) -> int:
    """Largest |q| a residual of 8-bit samples can have at this step."""
    return (255 + step // 2) // step


@functools.lru_cache(maxsize=8)
def _tables(step: int) -> tuple[np.ndarray, np.ndarray]:
    tables = geometric_tables(_half(step))
    return tables, code_lengths(tables)


def _block_grid(height: int, width: int) -> tuple[int, int]:
    return -(-height // BLOCK), -(-width // BLOCK)


def _classes(q: np.ndarray) -> np.ndarray:
    """Activity class (bh, bw) of each block, over all channels."""
    c, h, w = q.shape
    rows, cols = np.arange(0, h, BLOCK), np.arange(0, w, BLOCK)
    total = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for plane in q:  # one channel at a time keeps a 48 MP image's temporaries small
        total += np.add.reduceat(np.add.reduceat(np.abs(plane).astype(np.int32), rows, 0), cols, 1)
    count = c * np.outer(np.minimum(BLOCK, h - rows), np.minimum(BLOCK, w - cols))
    activity = 1 + np.searchsorted(_ACTIVITY, 4 * total // count, side="right")
    return np.where(total == 0, 0, activity).astype(np.int8)


def _contexts(block_class: np.ndarray, previous: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Context (H, W) int8 of each sample of a channel; -1 where its block is all zero."""
    per_pixel = block_class.repeat(BLOCK, 0).repeat(BLOCK, 1)[: shape[0], : shape[1]]
    ctx = (per_pixel - 1) * PREVIOUS
    if previous is not None:
        ctx += np.minimum(np.abs(previous), PREVIOUS - 1).astype(np.int8)
    return np.where(np.equal(per_pixel, 0), -1, ctx).astype(np.int8)


def _header_size(channels: int) -> int:
    return 1 + 2 * CLASSES + channels * CONTEXTS


def encode(q: np.ndarray, step: int) -> bytes:
    """Residual symbols (C, H, W) from ``quantize`` -> a refinement section."""
    if not 1 <= step <= 255:
        raise ValueError(f"refinement step {step} is outside 1..255")
    tables, bits = _tables(step)
    half = _half(step)
    block_class = _classes(q)
    class_hist = np.bincount(block_class.ravel(), minlength=CLASSES)
    class_counts = np.ceil(class_hist * 65535 / max(class_hist.max(), 65535)).astype("<u2")
    choices, pushes = [], []
    for c in range(len(q)):
        ctx = _contexts(block_class, q[c - 1] if c else None, q.shape[1:])
        symbols = (q[c] + half).astype(np.int32)
        coded = ctx >= 0
        hist = np.bincount(ctx[coded].astype(np.int64) * tables.shape[1] + symbols[coded],
                           minlength=CONTEXTS * tables.shape[1]).reshape(CONTEXTS, -1)
        theta = np.argmin(hist @ bits.T, axis=1).astype(np.uint8)  # cheapest table per context
        choices.append(theta)
        pushes.append((symbols, ctx, [categorical(tables[j]) for j in theta]))
    coder = constriction.stream.stack.AnsCoder()
    for symbols, ctx, models in reversed(pushes):  # a stack: the decoder reads channel 0 first
        push_groups(coder, symbols, ctx, models)
    push_groups(coder, block_class.ravel(), np.zeros(block_class.size, np.int8),
                [categorical(normalize_counts(class_counts))])
    return bytes([step]) + class_counts.tobytes() + np.concatenate(choices).tobytes() + ans_bytes(coder)


def decode(data: bytes, channels: int, height: int, width: int) -> tuple[int, np.ndarray]:
    """A refinement section -> (step, residual symbols (C, H, W) int16); FormatError on junk."""
    head = _header_size(channels)
    if len(data) < head:
        raise FormatError("refinement section is truncated")
    step = data[0]
    if step == 0:
        raise FormatError("refinement step 0 is invalid")
    class_counts = np.frombuffer(data, "<u2", CLASSES, 1)
    theta = np.frombuffer(data, np.uint8, channels * CONTEXTS, 1 + 2 * CLASSES).reshape(channels, CONTEXTS)
    if int(theta.max()) >= GEOMETRIC_STEPS:
        raise FormatError("refinement section names an unknown table")
    tables, _ = _tables(step)
    half = _half(step)
    bh, bw = _block_grid(height, width)
    q = np.empty((channels, height, width), dtype=np.int16)
    with ans_reader(data[head:], "refinement section") as coder:
        block_class = np.empty(bh * bw, dtype=np.int32)
        pop_groups(coder, np.zeros(bh * bw, np.int8), [categorical(normalize_counts(class_counts))],
                   block_class)
        block_class = block_class.reshape(bh, bw).astype(np.int8)
        for c in range(channels):
            ctx = _contexts(block_class, q[c - 1] if c else None, (height, width))
            symbols = np.full((height, width), half, dtype=np.int32)
            pop_groups(coder, ctx, [categorical(tables[j]) for j in theta[c]], symbols)
            q[c] = symbols - half
    return step, q
