"""Integer probability tables for the symbols of a bottleneck, and their ANS coding.

Bit-exact decoding is a property of this module, by construction: the probability of a symbol
is read from an integer table selected by an integer context (the previous section's symbol at
the same position, mapped to one of G groups by an integer lookup table). No float computed by
a network ever reaches the entropy decoder, so any machine, thread count or batch size decodes
the same symbols.

Tables are normalised with integer arithmetic to sum to exactly 2**24 - K; constriction's fast
quantiser (``perfect=False``) then adds one unit per symbol and its float scale is exactly 1.0,
so the CDF it builds is exact integer arithmetic too (see docs/FORMAT.md).
"""

from __future__ import annotations

from functools import cached_property

import constriction
import numpy as np

from .errors import FormatError

PRECISION = 24
"""Bits of probability precision of constriction's default ANS coder."""


def normalize_counts(counts: np.ndarray) -> np.ndarray:
    """Integer counts (..., K) -> int64 rows summing to exactly 2**24 - K, deterministically."""
    counts = counts.astype(np.int64) + 1  # never a zero row
    k = counts.shape[-1]
    total = (1 << PRECISION) - k
    out = counts * total // counts.sum(-1, keepdims=True)
    short = total - out.sum(-1)  # < K per row; give it to the most likely symbols
    rank = np.argsort(-counts, axis=-1, kind="stable")
    bonus = (np.arange(k) < short[..., None]).astype(np.int64)
    np.put_along_axis(out, rank, np.take_along_axis(out, rank, -1) + bonus, -1)
    return out


class IndexEntropyModel:
    """Tables ``counts[s, g, k]`` (uint16) and context maps ``context_map[s, k_prev]`` (uint8)."""

    def __init__(self, counts: np.ndarray, context_map: np.ndarray) -> None:
        self.counts = np.ascontiguousarray(counts, dtype=np.uint16)
        self.context_map = np.ascontiguousarray(context_map, dtype=np.uint8)
        self.sections, self.groups, self.alphabet = self.counts.shape
        if self.context_map.shape != (self.sections, self.alphabet) or int(
            self.context_map.max(initial=0)
        ) >= self.groups:
            raise ValueError("context map does not match the tables")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "context_map": self.context_map}

    def __getstate__(self) -> dict[str, np.ndarray]:  # constriction models do not pickle
        return self.arrays()

    def __setstate__(self, state: dict[str, np.ndarray]) -> None:
        self.__init__(**state)

    @cached_property
    def _models(self) -> list[list[constriction.stream.model.Categorical]]:
        tables = normalize_counts(self.counts).astype(np.float64)  # integers, exact in f64
        return [[constriction.stream.model.Categorical(t, perfect=False) for t in row] for row in tables]

    @cached_property
    def bits(self) -> np.ndarray:
        """Ideal code length in bits of each (section, group, symbol), for rate estimates."""
        p = normalize_counts(self.counts) + 1.0
        return -np.log2(p / (1 << PRECISION))

    def encode(self, symbols: np.ndarray) -> list[bytes]:
        """Symbols (n, ...) -> one independent ANS chunk per section (little-endian u32 words)."""
        flat = symbols.reshape(len(symbols), -1).astype(np.int32)
        chunks = []
        for s in range(len(flat)):
            ctx = self._context(s, flat[s - 1] if s else None, flat.shape[1])
            coder = constriction.stream.stack.AnsCoder()
            for g in reversed(range(self.groups)):  # a stack: the decoder pops groups in order
                sel = flat[s][ctx == g]
                if len(sel):
                    coder.encode_reverse(sel, self._models[s][g])
            chunks.append(coder.get_compressed().astype("<u4").tobytes())
        return chunks

    def decode(self, chunks: list[bytes], count: int) -> np.ndarray:
        """Inverse of ``encode``: ``count`` symbols per section. Raises FormatError on junk."""
        out = np.empty((len(chunks), count), dtype=np.int32)
        for s, chunk in enumerate(chunks):
            if len(chunk) % 4:
                raise FormatError(f"section {s} is not a whole number of 32-bit words")
            ctx = self._context(s, out[s - 1] if s else None, count)
            try:
                coder = constriction.stream.stack.AnsCoder(np.frombuffer(chunk, "<u4").astype(np.uint32))
                for g in range(self.groups):
                    mask = ctx == g
                    n = int(mask.sum())
                    if n:
                        out[s][mask] = coder.decode(self._models[s][g], n)
                clean = coder.is_empty()
            except (ValueError, RuntimeError, AssertionError) as exc:
                raise FormatError(f"section {s} does not decode ({exc})") from None
            if not clean:
                raise FormatError(f"section {s} has data left over after decoding")
        return out

    def _context(self, section: int, previous: np.ndarray | None, count: int) -> np.ndarray:
        if previous is None:
            return np.zeros(count, dtype=np.intp)
        return self.context_map[section][previous].astype(np.intp)

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int, groups: int, seed: int = 0) -> "IndexEntropyModel":
        """Count symbols (sections, N); for s >= 1 cluster the previous symbol into ``groups``
        contexts so that the conditional tables lose as little information as possible."""
        n_sec = len(symbols)
        counts = np.zeros((n_sec, groups, alphabet), dtype=np.int64)
        context_map = np.zeros((n_sec, alphabet), dtype=np.uint8)
        counts[0, :] = np.bincount(symbols[0], minlength=alphabet)
        for s in range(1, n_sec):
            joint = np.zeros((alphabet, alphabet), dtype=np.int64)
            np.add.at(joint, (symbols[s - 1], symbols[s]), 1)
            context_map[s] = _cluster_rows(joint, groups, seed)
            for g in range(groups):
                counts[s, g] = joint[context_map[s] == g].sum(0)
        scale = np.maximum(counts.max(-1, keepdims=True), 1)
        counts16 = np.ceil(counts * 65535 / np.maximum(scale, 65535)).astype(np.uint16)
        return cls(counts16, context_map)


def _cluster_rows(joint: np.ndarray, groups: int, seed: int, iters: int = 25) -> np.ndarray:
    """Group rows of a joint histogram (previous symbol x symbol) by k-means in the
    cross-entropy sense: each row goes to the group whose pooled distribution codes it best."""
    rng = np.random.default_rng(seed)
    rows = joint.astype(np.float64)
    weight = rows.sum(1)
    order = np.argsort(-weight, kind="stable")
    assign = np.zeros(len(rows), dtype=np.int64)
    assign[order[:groups]] = np.arange(min(groups, len(rows)))
    assign[order[groups:]] = rng.integers(0, groups, len(rows) - groups)
    for _ in range(iters):
        pooled = np.stack([rows[assign == g].sum(0) for g in range(groups)]) + 0.5
        logp = np.log(pooled / pooled.sum(1, keepdims=True))
        new = np.argmax(rows @ logp.T, axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
    return assign.astype(np.uint8)
