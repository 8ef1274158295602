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

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import cached_property

import constriction
import numpy as np
import torch

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
    bonus = np.less(np.arange(k), short[..., None]).astype(np.int64)
    np.put_along_axis(out, rank, np.take_along_axis(out, rank, -1) + bonus, -1)
    return out


CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
"""constriction's categorical family with a table per symbol (``encode_reverse(symbols, CATEGORICAL,
rows)``): the same coding as ``categorical(row)`` for each symbol, in one call."""


def categorical(table: np.ndarray) -> constriction.stream.model.Categorical:
    """constriction's model for one row of ``normalize_counts`` (exact: see the module doc)."""
    return constriction.stream.model.Categorical(table.astype(np.float64), perfect=False)


def code_lengths(tables: np.ndarray) -> np.ndarray:
    """Ideal code length in bits of each symbol of normalised tables, for rate estimates."""
    return -np.log2((tables + 1.0) / (1 << PRECISION))


def push_groups(coder: constriction.stream.stack.AnsCoder, symbols: np.ndarray,
                ctx: np.ndarray, models: list) -> None:
    """Encode ``symbols`` with ``models[ctx]``, group by group; ANS is a stack, so the groups
    go on in reverse and ``pop_groups`` takes them off as g = 0, 1, ... (row-major within).
    One stable sort finds every group, instead of a mask per group (an RVQ stage of 64
    channel groups has 1024 tables)."""
    flat_ctx = ctx.reshape(-1)
    order = _group_order(flat_ctx)
    ordered = symbols.reshape(-1)[order].astype(np.int32)
    for g, start, end in reversed(_runs(flat_ctx[order], len(models))):
        coder.encode_reverse(ordered[start:end], models[g])


def pop_groups(coder: constriction.stream.stack.AnsCoder, ctx: np.ndarray, models: list,
               out: np.ndarray) -> None:
    """Inverse of ``push_groups``: fill ``out`` (shaped like ``ctx``) in place, leaving positions
    whose context names no model (say -1: nothing coded) as they are. One stable sort puts
    the positions in group order, row-major within each, instead of a mask per group."""
    if not out.flags.c_contiguous:
        raise ValueError("pop_groups fills a contiguous array in place")
    flat_ctx = ctx.reshape(-1)
    order = _group_order(flat_ctx)
    runs = _runs(flat_ctx[order], len(models))
    if runs:
        order = order[runs[0][1] : runs[-1][2]]  # contexts beyond the models stay as they are
        out.reshape(-1)[order] = np.concatenate([coder.decode(models[g], end - start) for g, start, end in runs])


def _runs(sorted_ctx: np.ndarray, groups: int) -> list[tuple[int, int, int]]:
    """(group, start, end) of each non-empty group 0..groups-1 in sorted contexts."""
    bounds = np.searchsorted(sorted_ctx, np.arange(groups + 1))
    used = np.flatnonzero(np.diff(bounds))
    return list(zip(used.tolist(), bounds[used].tolist(), bounds[used + 1].tolist()))


def _group_order(flat_ctx: np.ndarray) -> np.ndarray:
    """Positions with a context (>= 0) in context order, row-major within one: the order
    ``push_groups`` and ``pop_groups`` take symbols in. Sorting only those positions is what
    keeps a pass that codes few of them cheap."""
    coded = np.flatnonzero(flat_ctx >= 0)
    keys = flat_ctx[coded]
    if len(keys) and keys.max() < 1 << 15:
        keys = keys.astype(np.int16)  # numpy sorts 16-bit keys by radix: several times faster
    return coded[np.argsort(keys, kind="stable")]


@contextmanager
def ans_reader(chunk: bytes, what: str) -> Iterator[constriction.stream.stack.AnsCoder]:
    """A decoder over a stored chunk of little-endian u32 words. Junk, or words left over when
    the block ends, raise FormatError naming ``what``."""
    if len(chunk) % 4:
        raise FormatError(f"{what} is not a whole number of 32-bit words")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(chunk, "<u4").astype(np.uint32))
        yield coder
        clean = coder.is_empty()
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise FormatError(f"{what} does not decode ({exc})") from None
    if not clean:
        raise FormatError(f"{what} has data left over after decoding")


def ans_bytes(coder: constriction.stream.stack.AnsCoder) -> bytes:
    return coder.get_compressed().astype("<u4").tobytes()


GEOMETRIC_STEPS = 128
"""Two-sided geometric tables have decay theta = j / 128, j in 0..127."""


def geometric_tables(half: int) -> np.ndarray:
    """Normalised tables (128, 2*half+1) of P(q) ~ theta**|q| for q in -half..half, one per
    theta = j/128. Built with integer arithmetic only, so every machine gets the same tables
    from the one byte ``j`` a file stores."""
    j = np.arange(GEOMETRIC_STEPS, dtype=np.int64)
    w = np.empty((GEOMETRIC_STEPS, half + 1), dtype=np.int64)
    w[:, 0] = 1 << 30
    for k in range(1, half + 1):
        w[:, k] = w[:, k - 1] * j // GEOMETRIC_STEPS
    return normalize_counts(np.concatenate([w[:, :0:-1], w], axis=1))


class _Tables:
    """Tables built from named integer arrays, which is also how they are saved and pickled."""

    def arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def rate_cost(self, level: int, bias: float) -> Callable[[int, torch.Tensor | None], torch.Tensor] | None:
        """``bias`` x the code length of each choice at ``level``, as the bottleneck's encoder
        takes it (bottlenecks.RateCost), or None where these tables price no choice."""
        return None

    def __getstate__(self) -> dict[str, np.ndarray]:  # constriction models do not pickle
        return self.arrays()

    def __setstate__(self, state: dict[str, np.ndarray]) -> None:
        self.__init__(**state)


class IndexEntropyModel(_Tables):
    """Tables ``counts[s, g, c, k]`` (uint16) and context maps ``context_map[s, g, k_prev]``
    (uint8) for RVQ indices: one section per stage, so the level is the number of sections.
    A section holds the indices of each of the G channel groups (group-major, then row-major
    positions); group g's index at a position is coded with the table of context c =
    context_map[s, g, k_prev], k_prev the previous stage's index of that group there. Tables of
    one group (G = 1) may be stored without that axis, as before channel groups."""

    def __init__(self, counts: np.ndarray, context_map: np.ndarray) -> None:
        counts, context_map = np.asarray(counts), np.asarray(context_map)
        if counts.ndim == 3 and context_map.ndim == 2:  # one group
            counts, context_map = counts[:, None], context_map[:, None]
        self.counts = np.ascontiguousarray(counts, dtype=np.uint16)
        self.context_map = np.ascontiguousarray(context_map, dtype=np.uint8)
        if self.counts.ndim != 4:
            raise ValueError("index tables must be (stages, groups, contexts, codes)")
        self.sections, self.streams, self.groups, self.alphabet = self.counts.shape
        if self.context_map.shape != (self.sections, self.streams, self.alphabet) or int(
            self.context_map.max(initial=0)
        ) >= self.groups:
            raise ValueError("context map does not match the tables")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "context_map": self.context_map}

    @cached_property
    def _models(self) -> list[list[constriction.stream.model.Categorical]]:
        """Per section, the models of every (group, context), as the flat context ``_context`` gives."""
        return [[categorical(t) for t in row.reshape(-1, self.alphabet)] for row in normalize_counts(self.counts)]

    @cached_property
    def bits(self) -> np.ndarray:
        """Code length in bits (sections, groups, contexts, K) of each symbol, for rate-biased encoding."""
        return code_lengths(normalize_counts(self.counts)).astype(np.float32)

    def rate_cost(self, level: int, bias: float) -> Callable[[int, torch.Tensor | None], torch.Tensor]:
        """Every code's bits (G, N, K), in the table the section before's symbols (G, N) at the
        same positions select (one (G, 1, K) row per group for the first section). The level
        does not enter: a stage's tables are the same at every level."""
        bits = torch.from_numpy(self.bits) * bias
        rows = bits.reshape(self.sections, -1, self.alphabet)  # flat contexts, as ``_context``
        maps = torch.from_numpy(self.context_map.astype(np.int64))
        first = torch.arange(self.streams)[:, None] * self.groups

        def cost(section: int, previous: torch.Tensor | None) -> torch.Tensor:
            if previous is None:
                return bits[section, :, :1]
            flat = first + maps[section].gather(1, previous.long())
            return rows[section].index_select(0, flat.reshape(-1)).view(*flat.shape, self.alphabet)

        return cost

    def constrain(self, symbols: np.ndarray, level: int) -> np.ndarray:
        return symbols  # every index has a table entry

    def level_of(self, chunks: list[bytes]) -> int:
        return len(chunks)

    def encode(self, symbols: np.ndarray, level: int | None = None) -> list[bytes]:
        """Symbols (n, groups, ...) -> one independent ANS chunk per section (little-endian u32 words)."""
        flat = symbols.reshape(len(symbols), -1).astype(np.int32)
        chunks = []
        for s in range(len(flat)):
            ctx = self._context(s, flat[s - 1] if s else None, flat.shape[1])
            coder = constriction.stream.stack.AnsCoder()
            push_groups(coder, flat[s], ctx, self._models[s])
            chunks.append(ans_bytes(coder))
        return chunks

    def decode(self, chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of ``encode``: symbols (sections, *shape), shape's first axis the groups.
        Raises FormatError on junk."""
        count = int(np.prod(shape))
        out = np.empty((len(chunks), count), dtype=np.int32)
        for s, chunk in enumerate(chunks):
            ctx = self._context(s, out[s - 1] if s else None, count)
            with ans_reader(chunk, f"section {s}") as coder:
                pop_groups(coder, ctx, self._models[s], out[s])
        return out.reshape(len(chunks), *shape)

    def _context(self, section: int, previous: np.ndarray | None, count: int) -> np.ndarray:
        """Flat context (group x contexts + context) of each of ``count`` symbols of a section."""
        group = np.repeat(np.arange(self.streams, dtype=np.intp), count // self.streams)
        if previous is None:
            return group * self.groups
        return group * self.groups + self.context_map[section][group, previous]

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int, groups: int, seed: int = 0) -> IndexEntropyModel:
        """Count symbols (sections, G, N), or (sections, N) for one group; for s >= 1 cluster the
        previous symbol of each group into ``groups`` contexts so that the conditional tables
        lose as little information as possible."""
        symbols = symbols[:, None] if symbols.ndim == 2 else symbols
        n_sec, streams = symbols.shape[:2]
        counts = np.zeros((n_sec, streams, groups, alphabet), dtype=np.int64)
        context_map = np.zeros((n_sec, streams, alphabet), dtype=np.uint8)
        for g in range(streams):
            counts[0, g, :] = np.bincount(symbols[0, g], minlength=alphabet)
        for s in range(1, n_sec):
            for g in range(streams):
                joint = np.bincount(symbols[s - 1, g].astype(np.int64) * alphabet + symbols[s, g],
                                    minlength=alphabet * alphabet).reshape(alphabet, alphabet)
                context_map[s, g] = _cluster_rows(joint, groups, seed)
                for c in range(groups):
                    counts[s, g, c] = joint[context_map[s, g] == c].sum(0)
        return cls(quantise16(counts), context_map)


class FactorizedTables(_Tables):
    """Integer tables of a factorized prior (the VAE's): ``counts[l, c, a]`` (int32) is the
    weight of value ``offsets[l, c] + a`` in channel c at level l, for a < ``widths[l, c]``
    (every row's full width where none are given). One section: a level byte, then ANS words
    with the channels in order, each channel's values row-major.

    Rows have their own widths because a latent's channels differ by orders of magnitude at fine
    levels (a lapped transform's DC coefficient spans thousands of steps where most channels
    span a few): one width for all would either clip the wide rows or store mostly zeros. Files
    store such tables packed (``packed``: the rows' used entries, concatenated)."""

    def __init__(self, counts: np.ndarray | None = None, offsets: np.ndarray | None = None,
                 widths: np.ndarray | None = None, packed: np.ndarray | None = None) -> None:
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int32)
        if packed is not None:
            counts = _unpack_rows(np.asarray(packed, dtype=np.int32), np.asarray(widths))
        self.counts = np.ascontiguousarray(counts, dtype=np.int32)
        if self.counts.ndim != 3 or self.offsets.shape != self.counts.shape[:2] or self.counts.min(initial=0) < 0:
            raise ValueError("factorized tables do not match their offsets")
        self.levels, self.channels, self.width = self.counts.shape
        full = np.full(self.offsets.shape, self.width, dtype=np.int32)
        self.widths = full if widths is None else np.ascontiguousarray(widths, dtype=np.int32)
        if self.widths.shape != self.offsets.shape or self.widths.min(initial=2) < 2 or self.widths.max(initial=1) > self.width:
            raise ValueError("factorized table widths do not match the tables")
        self._built: dict[int, list[constriction.stream.model.Categorical]] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        if (self.widths == self.width).all():
            return {"counts": self.counts, "offsets": self.offsets}
        used = np.less(np.arange(self.width), self.widths[..., None])
        return {"packed": self.counts[used], "widths": self.widths, "offsets": self.offsets}

    def _rows(self, level: int) -> list[np.ndarray]:
        """Each channel's normalised table at ``level``, over its own width."""
        return [normalize_counts(row[:w]) for row, w in zip(self.counts[level - 1], self.widths[level - 1])]

    def _models(self, level: int) -> list[constriction.stream.model.Categorical]:
        if level not in self._built:  # built on first use: a file uses one level
            self._built[level] = [categorical(t) for t in self._rows(level)]
        return self._built[level]

    def rate_cost(self, level: int, bias: float) -> Callable[[int, torch.Tensor | None], torch.Tensor]:
        """The bits of candidate values (B, C, h, w) under their channel's table at ``level``
        (a value beyond the table priced as its nearest end, which is what it is coded as)."""
        lengths = np.zeros((self.channels, self.width), dtype=np.float32)
        for c, row in enumerate(self._rows(level)):
            lengths[c, : len(row)] = code_lengths(row)
        lengths = torch.from_numpy(lengths) * bias
        low = torch.from_numpy(self.offsets[level - 1]).long()[:, None]
        last = torch.from_numpy(self.widths[level - 1]).long()[:, None] - 1

        def cost(section: int, values: torch.Tensor | None) -> torch.Tensor:
            b, c = values.shape[:2]
            index = torch.minimum((values.long().reshape(b, c, -1) - low).clamp(min=0), last)
            return torch.gather(lengths.expand(b, -1, -1), 2, index).view(values.shape)

        return cost

    def constrain(self, symbols: np.ndarray, level: int) -> np.ndarray:
        """Values clamped into the tables' range (a value beyond keeps the nearest end)."""
        lo = self.offsets[level - 1][:, None, None]  # symbols (..., C, h, w)
        return np.clip(symbols, lo, lo + self.widths[level - 1][:, None, None] - 1).astype(np.int32)

    def encode(self, symbols: np.ndarray, level: int) -> list[bytes]:
        """Values (1, C, ...) of one image -> its one section."""
        flat = symbols.reshape(self.channels, -1) - self.offsets[level - 1][:, None]
        coder = constriction.stream.stack.AnsCoder()
        models = self._models(level)
        for c in reversed(range(self.channels)):
            coder.encode_reverse(flat[c].astype(np.int32), models[c])
        return [bytes([level]) + ans_bytes(coder)]

    def level_of(self, chunks: list[bytes]) -> int:
        if len(chunks) != 1 or not chunks[0]:
            raise FormatError("a factorized-prior file has exactly one non-empty section")
        level = chunks[0][0]
        if not 1 <= level <= self.levels:
            raise FormatError(f"level {level} is outside the model's 1..{self.levels}")
        return level

    def decode(self, chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of ``encode``: values (1, *shape), shape = (C, h, w)."""
        level = self.level_of(chunks)
        if shape[0] != self.channels:
            raise ValueError("shape does not match the tables' channels")
        count = int(np.prod(shape[1:]))
        out = np.empty((self.channels, count), dtype=np.int32)
        models = self._models(level)
        with ans_reader(chunks[0][1:], "section 0") as coder:
            for c in range(self.channels):
                out[c] = coder.decode(models[c], count)
        return (out + self.offsets[level - 1][:, None]).reshape(1, *shape)


class ContextTables(FactorizedTables):
    """A factorized prior's tables plus tables chosen by the decoded neighbourhood (the VAE's).

    The latent's channels are decoded in order, each in two checkerboard passes: first the
    anchors (row + column even), then the rest. A value's table is one of ``classes`` per pass,
    chosen by how busy its already-decoded surroundings are, an integer *activity*:

    * ``cross``: sum of |value| over every earlier channel in the 3x3 window around it;
    * ``prev``: sum of |value| of channel c-1 in that window;
    * ``own`` (second pass only): sum of |value| of its four neighbours in its own channel,
      all anchors, so already decoded;

    activity = (1 + cross)(1 + prev) for an anchor, (1 + own)^2 (1 + cross)(1 + prev) for the
    rest (each term clipped, so the product fits int64 whatever a file holds), and the class is
    how many of the channel's ``thresholds[l, c, pass]`` it reaches. A factorized prior prices
    every value of a channel alike; this spends fewer bits where the image is flat and more in
    texture, which is most of what a hyperprior buys, from integers the decoder already has.

    Tables are stored as uint16 ``context_packed``: for each level, channel and class (anchor
    classes first), the channel's ``widths[l, c]`` entries, concatenated. Without them (files
    from before) these are plain factorized tables. Sections are marked by bit 7 of their
    level byte, so factorized sections of the same model still decode."""

    MARK = 0x80
    """Set in a section's level byte when its values are context-coded."""
    CLIP = {"own": (1 << 14) - 1, "prev": (1 << 14) - 1, "cross": (1 << 20) - 1}
    """Largest value of each term: (2^14)^2 x 2^20 x 2^14 = 2^62 < 2^63."""

    def __init__(self, counts: np.ndarray | None = None, offsets: np.ndarray | None = None,
                 widths: np.ndarray | None = None, packed: np.ndarray | None = None,
                 context_packed: np.ndarray | None = None, thresholds: np.ndarray | None = None) -> None:
        super().__init__(counts, offsets, widths, packed)
        self.contextual = context_packed is not None
        if not self.contextual:
            return
        self.thresholds = np.ascontiguousarray(thresholds, dtype=np.int64)
        if self.thresholds.ndim != 4 or self.thresholds.shape[:3] != (self.levels, self.channels, 2) or \
                (np.diff(self.thresholds, axis=-1) < 0).any():
            raise ValueError("context thresholds do not match the tables")
        self.classes = self.thresholds.shape[-1] + 1
        self.context_packed = np.ascontiguousarray(context_packed, dtype=np.uint16)
        rows = 2 * self.classes * self.widths.astype(np.int64)
        if self.context_packed.ndim != 1 or len(self.context_packed) != rows.sum():
            raise ValueError("context tables do not match their widths")
        self._starts = np.concatenate([[0], np.cumsum(rows.ravel())]).reshape(-1)
        self._context_built: dict[int, list[list[constriction.stream.model.Categorical]]] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        mine = {"context_packed": self.context_packed, "thresholds": self.thresholds} if self.contextual else {}
        return super().arrays() | mine

    def factorized(self) -> FactorizedTables:
        """The same prior without the context tables, to measure what they save."""
        return FactorizedTables(self.counts, self.offsets, self.widths)

    def context_rows(self, level: int, channel: int) -> np.ndarray:
        """Counts (2 x classes, width) of one channel at ``level``: anchor classes, then the rest."""
        i = (level - 1) * self.channels + channel
        return self.context_packed[self._starts[i] : self._starts[i + 1]].reshape(2 * self.classes, -1)

    def _context_models(self, level: int) -> list[list[constriction.stream.model.Categorical]]:
        if level not in self._context_built:
            self._context_built[level] = [[categorical(t) for t in normalize_counts(self.context_rows(level, c))]
                                          for c in range(self.channels)]
        return self._context_built[level]

    # -- the context rule, shared by encoder, decoder and fitting ------------------------
    @staticmethod
    def anchors(h: int, w: int) -> np.ndarray:
        """The first pass's positions (h, w): row + column even."""
        return np.equal(np.add.outer(np.arange(h), np.arange(w)) % 2, 0)  # not ==: see fuzz_decode.py

    @classmethod
    def _activity(cls, cross: np.ndarray, prev: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        act = (1 + np.minimum(cross, cls.CLIP["cross"])) * (1 + np.minimum(prev, cls.CLIP["prev"]))
        if own is not None:
            act = act * (1 + np.minimum(own, cls.CLIP["own"])) ** 2
        return act

    @classmethod
    def activities(cls, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every position's (anchor, second-pass) activity (C, h, w) from all values (C, h, w):
        what the decoder computes as it goes, computed at once (each only where it is used)."""
        a = np.abs(values.astype(np.int64))
        earlier = np.cumsum(a, 0) - a
        cross, prev = _box3(earlier), _box3(np.concatenate([np.zeros_like(a[:1]), a[:-1]]))
        return cls._activity(cross, prev), cls._activity(cross, prev, _four(a))

    def _class(self, level: int, channel: int, second: bool, activity: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.thresholds[level - 1, channel, int(second)], activity, side="right")

    # -- coding -------------------------------------------------------------------------
    def encode(self, symbols: np.ndarray, level: int) -> list[bytes]:
        """Values (1, C, h, w) of one image -> its one section, context-coded if there are tables."""
        if not self.contextual:
            return super().encode(symbols, level)
        values = symbols.reshape(self.channels, *symbols.shape[-2:])
        first, second = self.activities(values)
        anchor = self.anchors(*values.shape[1:])
        flat = values - self.offsets[level - 1][:, None, None]
        coder = constriction.stream.stack.AnsCoder()
        models = self._context_models(level)
        for c in reversed(range(self.channels)):  # the decoder pops c = 0, 1, ..., anchors first
            for part, where, act in ((1, ~anchor, second[c]), (0, anchor, first[c])):
                push_groups(coder, flat[c][where], self._class(level, c, bool(part), act[where]),
                            models[c][part * self.classes : (part + 1) * self.classes])
        return [bytes([level | self.MARK]) + ans_bytes(coder)]

    def level_of(self, chunks: list[bytes]) -> int:
        if chunks and chunks[0] and chunks[0][0] & self.MARK:
            if not self.contextual:
                raise FormatError("the section is context-coded, and this model has no context tables")
            return super().level_of([bytes([chunks[0][0] & ~self.MARK])])
        return super().level_of(chunks)

    def decode(self, chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of ``encode``: values (1, *shape), shape = (C, h, w)."""
        level = self.level_of(chunks)
        if not chunks[0][0] & self.MARK:
            return super().decode(chunks, shape)
        if shape[0] != self.channels:
            raise ValueError("shape does not match the tables' channels")
        h, w = shape[1:]
        anchor = self.anchors(h, w)
        out = np.zeros(shape, dtype=np.int64)
        cross = np.zeros((h, w), dtype=np.int64)  # the 3x3 sums of the channels decoded
        prev = np.zeros((h, w), dtype=np.int64)  # and of the last of them
        models = self._context_models(level)
        offsets = self.offsets[level - 1]
        with ans_reader(chunks[0][1:], "section 0") as coder:
            for c in range(self.channels):
                for part, where in ((0, anchor), (1, ~anchor)):
                    own = _four(np.abs(out[c])) if part else None
                    act = self._activity(cross, prev, own)[where]
                    got = np.empty(len(act), dtype=np.int32)
                    pop_groups(coder, self._class(level, c, bool(part), act),
                               models[c][part * self.classes : (part + 1) * self.classes], got)
                    out[c][where] = got.astype(np.int64) + offsets[c]
                prev = _box3(np.abs(out[c]))
                cross += prev  # a box sum of a sum is the sum of the box sums
        return out.astype(np.int32)[None]

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(cls, prior: FactorizedTables, symbols: list[list[np.ndarray]], classes: int = 8,
            pseudo: float = 32.0) -> ContextTables:
        """Thresholds and tables from training symbols, one array (1, 1, C, h, w) per image and
        level (``symbols[l - 1]``). Each channel's thresholds split its training positions of
        each pass into ``classes`` equally common activity ranges; each class's table is the
        values counted there plus ``pseudo`` samples' worth of the prior's own table, so a class
        that training saw rarely falls back on the prior, not on noise."""
        thresholds = np.zeros((prior.levels, prior.channels, 2, classes - 1), dtype=np.int64)
        rows = []
        for level, images in enumerate(symbols, 1):
            values = [prior.constrain(img, level).reshape(prior.channels, *img.shape[-2:]) for img in images]
            acts = [cls.activities(v) for v in values]
            masks = [cls.anchors(*v.shape[1:]) for v in values]
            for c in range(prior.channels):
                width, low = int(prior.widths[level - 1, c]), int(prior.offsets[level - 1, c])
                base = normalize_counts(prior.counts[level - 1, c, :width]).astype(np.float64)
                for part in (0, 1):
                    act = np.concatenate([a[part][c][m != part] for a, m in zip(acts, masks)])
                    val = np.concatenate([v[c][m != part] for v, m in zip(values, masks)]) - low
                    if len(act):
                        thresholds[level - 1, c, part] = np.quantile(act, np.arange(1, classes) / classes,
                                                                      method="lower")
                    cl = np.searchsorted(thresholds[level - 1, c, part], act, side="right")
                    hist = np.bincount(cl * width + val, minlength=classes * width).reshape(classes, width)
                    rows.append(hist + pseudo * base / base.sum())
        packed = np.concatenate([quantise16(r).ravel() for r in rows])
        return cls(prior.counts, prior.offsets, prior.widths, context_packed=packed, thresholds=thresholds)


def quantise16(counts: np.ndarray) -> np.ndarray:
    """Non-negative counts (..., K) -> uint16 rows with the same proportions, each row's
    largest entry 65535 and no non-zero entry rounded to zero. Every row is scaled to the full
    16 bits, up as well as down: a row of 2000 counts kept as is would round a rare symbol's
    share of 0.01 up to 1 in 2000, 30 times its weight at full scale."""
    scale = np.maximum(counts.max(-1, keepdims=True), np.finfo(np.float64).tiny)
    # the largest entry scales to 65535 up to rounding: clip, or 65536 would wrap to 0
    return np.minimum(np.ceil(counts * 65535 / scale), 65535).astype(np.uint16)


def _padded(x: np.ndarray) -> np.ndarray:
    """x with a border of zeros one wide around its last two axes (np.pad is slow here)."""
    out = np.zeros((*x.shape[:-2], x.shape[-2] + 2, x.shape[-1] + 2), dtype=x.dtype)
    out[..., 1:-1, 1:-1] = x
    return out


def _box3(x: np.ndarray) -> np.ndarray:
    """Sum over the 3x3 window around each position of the last two axes (zeros outside)."""
    p = _padded(x)
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _four(x: np.ndarray) -> np.ndarray:
    """Sum of the four neighbours (up, down, left, right) of each position (zeros outside)."""
    p = _padded(x)
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def _unpack_rows(packed: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Rows of ``widths`` (L, C) entries each, concatenated in ``packed`` -> (L, C, max width)."""
    widths = widths.astype(np.int64)
    if widths.ndim != 2 or widths.min(initial=2) < 2 or packed.ndim != 1 or len(packed) != widths.sum():
        raise ValueError("packed factorized tables do not match their widths")
    out = np.zeros((*widths.shape, int(widths.max(initial=1))), dtype=np.int32)
    out[np.less(np.arange(out.shape[-1]), widths[..., None])] = packed
    return out


class SparseTables(FactorizedTables):
    """A factorized prior's tables, coded as a significance map plus values (the sparse
    autoencoder's): channel by channel, first whether each value is non-zero, with a binary
    table ``significance[l, c, k]`` chosen by k = how many of the two previous channels are
    non-zero at that position, then the non-zero values with the prior's table less its zero.
    The context is what a factorized prior cannot see: zeros cluster across channels."""

    CONTEXTS = 3

    def __init__(self, counts: np.ndarray | None = None, offsets: np.ndarray | None = None,
                 significance: np.ndarray | None = None, widths: np.ndarray | None = None,
                 packed: np.ndarray | None = None) -> None:
        super().__init__(counts, offsets, widths, packed)
        self.significance = np.ascontiguousarray(significance, dtype=np.int32)
        if self.significance.shape != (self.levels, self.channels, self.CONTEXTS, 2) or self.significance.min(initial=0) < 0:
            raise ValueError("significance tables do not match the value tables")

    def arrays(self) -> dict[str, np.ndarray]:
        return super().arrays() | {"significance": self.significance}

    def rate_cost(self, level: int, bias: float) -> None:
        """None: here a value's bits depend on whether its neighbouring channels are zero,
        which a choice made value by value cannot see, so the sparse model rounds plainly."""
        return None

    def factorized(self) -> FactorizedTables:
        """The same prior coded without the significance map, to measure what it saves."""
        return FactorizedTables(self.counts, self.offsets, self.widths)

    def _models(self, level: int) -> list:
        """Per channel: (significance models by context, value model without zero)."""
        if level not in self._built:
            values = self.counts[level - 1].copy()
            zero = -self.offsets[level - 1]  # table index of the value 0, where in range
            inside = (zero >= 0) & (zero < self.widths[level - 1])
            values[np.flatnonzero(inside), zero[inside]] = 0
            self._built[level] = [([categorical(t) for t in normalize_counts(sig)], categorical(normalize_counts(v[:w])))
                                  for sig, v, w in zip(self.significance[level - 1], values, self.widths[level - 1])]
        return self._built[level]

    @classmethod
    def contexts(cls, nonzero: np.ndarray, c: int) -> np.ndarray:
        """Context of channel c's positions: non-zero count among channels c-1 and c-2."""
        ctx = np.zeros(nonzero.shape[1], dtype=np.intp)
        for prev in (c - 1, c - 2):
            if prev >= 0:
                ctx += nonzero[prev]
        return ctx

    def encode(self, symbols: np.ndarray, level: int) -> list[bytes]:
        values = symbols.reshape(self.channels, -1)
        nonzero = (values != 0).astype(np.int32)
        offsets = self.offsets[level - 1]
        coder = constriction.stream.stack.AnsCoder()
        models = self._models(level)
        for c in reversed(range(self.channels)):  # the decoder pops significance, then values
            sig_models, value_model = models[c]
            kept = values[c][nonzero[c] == 1]
            if len(kept):
                coder.encode_reverse((kept - offsets[c]).astype(np.int32), value_model)
            push_groups(coder, nonzero[c], self.contexts(nonzero, c), sig_models)
        return [bytes([level]) + ans_bytes(coder)]

    def decode(self, chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        level = self.level_of(chunks)
        if shape[0] != self.channels:
            raise ValueError("shape does not match the tables' channels")
        count = int(np.prod(shape[1:]))
        nonzero = np.zeros((self.channels, count), dtype=np.int32)
        out = np.zeros((self.channels, count), dtype=np.int32)
        models = self._models(level)
        with ans_reader(chunks[0][1:], "section 0") as coder:
            for c in range(self.channels):
                sig_models, value_model = models[c]
                pop_groups(coder, self.contexts(nonzero, c), sig_models, nonzero[c])
                mask = np.equal(nonzero[c], 1)  # not ==: see fuzz/fuzz_decode.py
                n = int(np.count_nonzero(mask))
                if n:
                    out[c][mask] = coder.decode(value_model, n) + self.offsets[level - 1][c]
        return out.reshape(1, *shape)

    @classmethod
    def fit(cls, prior: FactorizedTables, symbols: list[list[np.ndarray]]) -> SparseTables:
        """Significance tables counted from training symbols, one array (1, 1, C, h, w) per
        image and level (``symbols[l - 1]`` for level l, each a list)."""
        sig = np.zeros((prior.levels, prior.channels, cls.CONTEXTS, 2), dtype=np.int64)
        for level, images in enumerate(symbols, 1):
            for img in images:
                v = prior.constrain(img, level).reshape(prior.channels, -1)
                nonzero = (v != 0).astype(np.int32)
                for c in range(prior.channels):
                    np.add.at(sig[level - 1, c], (cls.contexts(nonzero, c), nonzero[c]), 1)
        return cls(prior.counts, prior.offsets, np.minimum(sig, np.iinfo(np.int32).max), prior.widths)


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


class PlaneTables(_Tables):
    """Integer tables for the decisions of a bit-plane residual quantizer (``LatticeRVQ``).

    Plane p rounds every coefficient's magnitude down to a multiple of step_p = top / 2**p, so
    its magnitude index m_p is 2 m_{p-1} + (0 or 1) once the coefficient is significant (m > 0)
    and 0 or 1 before (top is above every magnitude): each plane's cells split the cells of the
    plane before, and the planes together cost no more than coding the finest plane's indices
    directly (the chain rule). A plane is coded in three *passes*, JPEG 2000's order:

    * ``NEAR``: significance (0, 1 = becomes significant and positive, 2 = negative) of the
      coefficients still at 0 with a significant coefficient in the 3x3 window of their own
      channel or the two beside it: the likeliest to become significant, so the most
      distortion removed per bit;
    * ``REFINE``: the next magnitude bit of the significant coefficients;
    * ``FAR``: significance of the rest, the isolated ones.

    Each significance pass codes its coefficients in two halves, a checkerboard over channel,
    row and column (He et al.'s checkerboard context, 2021): the first half, where c + y + x
    is even, then the second, whose 3x3 windows and adjacent channels hold first-half
    coefficients, with the first half's decisions counted in its activity and tables of its
    own. A *side* names the tables: 2 x (pass is ``FAR``) + half.

    The first section holds the passes of the first ``head`` planes, every later section one
    pass, so a file can be cut after any pass past the head, each cut a coarser code of the
    same image.

    Tables are chosen by integers the decoder already has. A significance decision's table is
    one of ``classes`` per plane, channel and side, by its *activity* (1 + own)^2 (1 + mates)
    (1 + all): sums over its 3x3 window of the magnitudes so far (the finished planes, plus 1
    where this plane's decisions already made a coefficient significant; each clipped at
    ``CLIP``), in its own channel, in its *partner* channels, and in every channel, against
    the channel's ``thresholds[p, c, side]``. A channel's partners are the few whose
    magnitudes follow its own most closely on the training photos (``fit_partners``): in the
    coding space's order the channels beside a channel are not the likeliest to be busy where
    it is (which pass a coefficient is in still goes by them: the quantizer decides that
    before any table exists).
    A refinement bit's table is one of 3 per plane and channel: the magnitude so far, 1, 2 or
    3 and more.

    Arrays: ``significance[p, c, side, class, 3]`` and ``refinement[p, c, 3, 2]`` (uint16
    counts), ``thresholds[p, c, side, classes - 1]`` (int64, non-decreasing, in [0, 2^40)),
    ``partners[c, k]`` (int32, 1 <= k <= ``MATES``), ``head`` and ``order`` (one int32 each: ``order`` is the coding
    order, ``ORDER``; tables saved without it are an earlier order's, which this coder cannot
    decode)."""

    NEAR, REFINE, FAR = 0, 1, 2
    SIDES = 4
    ORDER = 2
    """The coding order these tables are for: 1, the passes whole, activities from the
    adjacent channels (tables saved before ``order`` was); 2, each significance pass in
    checkerboard halves, activities from partner channels."""
    CLIP = 15
    MATES = 12
    """Largest magnitude an activity counts, and most partners a channel has: (1 + 135)^2
    (1 + 12 x 135)(1 + 34560) < 2**40."""

    def __init__(self, significance: np.ndarray, refinement: np.ndarray, thresholds: np.ndarray,
                 head: np.ndarray | int = 1, order: np.ndarray | int = 1, partners: np.ndarray | None = None) -> None:
        order = int(np.asarray(order).reshape(-1)[0])
        if order != self.ORDER or partners is None:
            raise ValueError(f"plane tables for coding order {order}; this aecodec codes order {self.ORDER}: "
                             "export the model again with this version")
        self.partners = np.ascontiguousarray(partners, dtype=np.int64)
        self.significance = np.ascontiguousarray(significance, dtype=np.uint16)
        self.refinement = np.ascontiguousarray(refinement, dtype=np.uint16)
        self.thresholds = np.ascontiguousarray(thresholds, dtype=np.int64)
        self.head = int(np.asarray(head).reshape(-1)[0])
        if self.significance.ndim != 5 or self.significance.shape[2] != self.SIDES or self.significance.shape[-1] != 3:
            raise ValueError(f"significance tables must be (planes, channels, {self.SIDES}, classes, 3)")
        self.planes, self.channels, _, self.classes = self.significance.shape[:4]
        if self.refinement.shape != (self.planes, self.channels, 3, 2) or \
                self.partners.ndim != 2 or len(self.partners) != self.channels or \
                not 1 <= self.partners.shape[1] <= self.MATES or not (0 <= self.partners).all() or \
                not (self.partners < self.channels).all() or \
                self.thresholds.shape != (self.planes, self.channels, self.SIDES, self.classes - 1) or \
                (np.diff(self.thresholds, axis=-1) < 0).any() or self.thresholds.min(initial=0) < 0 or \
                self.thresholds.max(initial=0) >= 1 << 40 or not 1 <= self.head <= self.planes:
            raise ValueError("plane tables, thresholds, partners or head do not match each other")
        self.sections = 1 + 3 * (self.planes - self.head)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"significance": self.significance, "refinement": self.refinement, "thresholds": self.thresholds,
                "partners": self.partners.astype(np.int32), "head": np.array([self.head], dtype=np.int32),
                "order": np.array([self.ORDER], dtype=np.int32)}

    @cached_property
    def _tables(self) -> list[tuple[list[np.ndarray], np.ndarray]]:
        """Per plane, each side's significance tables and the refinement tables, normalised,
        as float64 rows (exact: see the module doc) indexed by the flat context."""
        sig, ref = normalize_counts(self.significance).astype(np.float64), normalize_counts(self.refinement)
        return [([np.ascontiguousarray(sig[p, :, side]).reshape(-1, 3) for side in range(self.SIDES)],
                 ref[p].reshape(-1, 2).astype(np.float64)) for p in range(self.planes)]

    # -- the schedule and the context rule, shared by the quantizer, coder and fitting -----
    @staticmethod
    def passes(planes: int, head: int, sections: int) -> list[tuple[int, int, int]]:
        """(section, plane, pass) of each pass in the first ``sections`` sections."""
        out = [(0 if p < head else 1 + 3 * (p - head) + k, p, k) for p in range(planes) for k in range(3)]
        return [x for x in out if x[0] < sections]

    @classmethod
    def boxes(cls, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sums of the magnitudes m (..., C, h, w), each clipped at ``CLIP``, over the 3x3
        window: in the coefficient's own channel, in the two beside it, and in every channel
        ((..., 1, h, w)); int32."""
        own, every = cls._windows(m)
        near = np.zeros_like(own)
        near[..., 1:, :, :] += own[..., :-1, :, :]
        near[..., :-1, :, :] += own[..., 1:, :, :]
        return own, near, every

    @classmethod
    def _windows(cls, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The own-channel and every-channel sums of ``boxes`` (what the activities need)."""
        mc = np.minimum(m, cls.CLIP).astype(np.int32, copy=False)
        return _box3(mc), _box3(mc.sum(-3, keepdims=True))

    @classmethod
    def members(cls, kind: int, m: np.ndarray, boxes: tuple | None = None) -> np.ndarray:
        """Which coefficients a pass of this kind codes, from the finished planes' magnitudes m
        (..., C, h, w) (and their ``boxes``, if already computed)."""
        if kind == cls.REFINE:
            return m > 0
        own, near, _ = cls.boxes(m) if boxes is None else boxes
        return (m == 0) & ((own + near > 0) == (kind == cls.NEAR))

    def _sums(self, own: np.ndarray, every: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The activity's three window sums from ``_windows``: own, the partners' own (whole
        rows gathered: far cheaper than each coefficient's partners; one partner at a time, so
        a large image holds one more latent-sized array, not one per partner) and every
        channel's, flat int32."""
        mates = own[self.partners[:, 0]]
        for column in self.partners.T[1:]:
            mates += own[column]
        return own.reshape(-1), mates.reshape(-1), every.reshape(-1)

    @staticmethod
    def _activities(coded: np.ndarray, sums: tuple[np.ndarray, np.ndarray, np.ndarray], size: int) -> np.ndarray:
        """Activities (int64) of the coefficients at flat indices ``coded`` (C, h, w) of ``size`` per channel."""
        own, mates, every = sums
        return ((1 + own[coded].astype(np.int64)) ** 2 * (1 + mates[coded].astype(np.int64))
                * (1 + every[coded % size].astype(np.int64)))

    def _classify(self, plane: int, side: int, coded: np.ndarray, act: np.ndarray, size: int) -> np.ndarray:
        """Flat contexts (channel x classes + class) of coded coefficients with these activities.
        One search covers every channel's thresholds: channel c's keys start at c x 2^41, above
        every activity (< 2^40), so the count found is c x (classes - 1) + the class."""
        which = coded // size
        keys = self._threshold_keys[plane, side]
        return which * self.classes + np.searchsorted(keys, (which << 41) + act, side="right") - which * (self.classes - 1)

    @cached_property
    def _threshold_keys(self) -> np.ndarray:
        """(planes, sides, channels x (classes - 1)): thresholds[p, c, side, j] + c x 2^41, sorted."""
        shifted = self.thresholds + (np.arange(self.channels, dtype=np.int64) << 41)[:, None, None]
        return np.ascontiguousarray(shifted.transpose(0, 2, 1, 3).reshape(self.planes, self.SIDES, -1))

    def _steps(self, sections: int, shape: tuple[int, ...],
               decisions: Callable[[int, int, int, int, np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Run the rule over the passes of the first ``sections`` sections:
        ``decisions(i, section, plane, side, coded, key)`` gets the flat indices of the
        coefficients (C, h, w) that pass i codes on that side (-1 for refinement) and, for
        each, its activity (significance) or its magnitude so far less 1, at most 2
        (refinement), and returns pass i's decisions (C, h, w), right at least at ``coded``
        and at every coefficient its earlier calls coded."""
        m = np.zeros(shape, dtype=np.int32)
        size = int(np.prod(shape[1:]))
        c, h, w = (np.arange(n) for n in shape)
        second = ((c[:, None, None] + h[:, None] + w) % 2 == 1).reshape(-1)  # the checkerboard's second half
        for i, (section, plane, kind) in enumerate(self.passes(self.planes, self.head, sections)):
            if kind == self.NEAR:  # a new plane
                fresh = np.zeros(shape, dtype=bool)
                base = self.boxes(m)  # which pass codes what
                live = self._sums(base[0], base[2])  # what the activities count
            if kind == self.REFINE:
                coded = np.flatnonzero(m > 0)
                bits = decisions(i, section, plane, -1, coded, np.minimum(m.reshape(-1)[coded], 3) - 1)
                continue
            members = np.flatnonzero(self.members(kind, m, base))
            later = second[members]
            for half, coded in enumerate((members[~later], members[later])):
                got = decisions(i, section, plane, 2 * int(kind == self.FAR) + half, coded,
                                self._activities(coded, live, size))
                new = coded[got.reshape(-1)[coded] > 0]
                fresh.reshape(-1)[new] = True
                if len(new) and (kind, half) != (self.FAR, 1):  # the rest of the plane sees them
                    live = self._sums(*self._windows(m + fresh))
            if kind == self.FAR:
                m = np.where(m > 0, 2 * m + bits, fresh).astype(np.int32, copy=False)

    def _walk(self, sections: int, shape: tuple[int, ...],
              decisions: Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> None:
        """``_steps`` with each step's tables: ``decisions(i, section, coded, tables, ctx)``,
        where ``tables[ctx]`` (len(coded), K) float64 are the coded coefficients' rows, in order."""
        size = int(np.prod(shape[1:]))

        def step(i: int, section: int, plane: int, side: int, coded: np.ndarray, key: np.ndarray) -> np.ndarray:
            significance, refinement = self._tables[plane]
            if side < 0:
                return decisions(i, section, coded, refinement, (coded // size) * 3 + key)
            return decisions(i, section, coded, significance[side], self._classify(plane, side, coded, key, size))

        self._steps(sections, shape, step)

    # -- coding -------------------------------------------------------------------------
    def constrain(self, symbols: np.ndarray, level: int) -> np.ndarray:
        return symbols  # decisions are in range by construction

    def level_of(self, chunks: list[bytes]) -> int:
        return len(chunks)

    def section_count(self, passes: int) -> int:
        """Sections that ``passes`` passes fill; ValueError unless they fill them exactly."""
        sections = 1 + passes - 3 * self.head
        if not 1 <= sections <= self.sections:
            raise ValueError(f"{passes} passes do not fill whole sections")
        return sections

    def encode(self, symbols: np.ndarray, level: int | None = None) -> list[bytes]:
        """Decisions (passes, C, h, w) of one image -> one independent ANS chunk per section.
        A section's passes are kept (values and contexts) until it is complete, then
        pushed last first, so that they pop in order."""
        chunks: list[bytes] = []
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def push() -> None:
            coder = constriction.stream.stack.AnsCoder()
            for values, tables, ctx in reversed(pending):
                coder.encode_reverse(values.astype(np.int32), CATEGORICAL, tables[ctx])
            chunks.append(ans_bytes(coder))
            pending.clear()

        def collect(i: int, section: int, coded: np.ndarray, tables: np.ndarray, ctx: np.ndarray) -> np.ndarray:
            while section > len(chunks):  # the sections before are complete
                push()
            if len(coded):
                pending.append((symbols[i].reshape(-1)[coded], tables, ctx.astype(np.int32)))
            return symbols[i]

        count = self.section_count(len(symbols))
        self._walk(count, symbols.shape[1:], collect)
        while len(chunks) < count:
            push()
        return chunks

    def decode(self, chunks: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of ``encode``: decisions (passes, *shape) int8, 0 where a pass codes none.
        Raises FormatError on junk."""
        if shape[0] != self.channels:
            raise ValueError("shape does not match the tables' channels")
        if not 1 <= len(chunks) <= self.sections:
            raise FormatError(f"{len(chunks)} sections, the model has 1 to {self.sections}")
        out = np.zeros((len(self.passes(self.planes, self.head, len(chunks))), *shape), dtype=np.int8)
        with ExitStack() as stack:
            coders = [stack.enter_context(ans_reader(c, f"section {k}")) for k, c in enumerate(chunks)]

            def pop(i: int, section: int, coded: np.ndarray, tables: np.ndarray, ctx: np.ndarray) -> np.ndarray:
                if len(coded):
                    out[i].reshape(-1)[coded] = coders[section].decode(CATEGORICAL, tables[ctx])
                return out[i]

            self._walk(len(chunks), shape, pop)
        return out

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(cls, symbols: list[np.ndarray], head: int, classes: int = 16, pseudo: float = 32.0,
            pooled: bool = False) -> PlaneTables:
        """Tables and thresholds from every pass's decisions (3 x planes, C, h, w) of training
        images. Each channel's thresholds split the activities its coefficients see in a pass
        into ``classes`` equally common ranges; each table is the decisions counted there plus
        ``pseudo`` samples' worth of the channel's own distribution over all classes, so a
        class that training saw rarely falls back on the channel, not on noise. ``pooled``
        gives every side one table, counted over all: with one class, tables that see nothing
        of the neighbourhood (what ``benchmarks.context`` measures against)."""
        n, channels = symbols[0].shape[:2]
        if n % 3:
            raise ValueError("tables are fitted on whole planes (three passes each)")
        planes = n // 3
        partners = cls.fit_partners(symbols)
        sig = np.zeros((planes, channels, cls.SIDES, classes, 3))
        ref = np.zeros((planes, channels, 3, 2))
        thresholds = np.zeros((planes, channels, cls.SIDES, classes - 1), dtype=np.int64)
        # activities of every 32nd coded coefficient set the thresholds (all of them would
        # take gigabytes); then a second run counts the decisions in the classes they make
        seen: list[list] = [[[] for _ in range(cls.SIDES)] for _ in range(planes)]  # (channel, activity)
        probe = cls(sig, ref, thresholds, head, cls.ORDER, partners)
        for img in symbols:
            def record(i: int, section: int, plane: int, side: int, coded: np.ndarray, key: np.ndarray,
                       img: np.ndarray = img) -> np.ndarray:
                if side >= 0:
                    seen[plane][side].append((coded[::32] // img[0, 0].size, key[::32]))
                return img[i]

            probe._steps(probe.sections, img.shape[1:], record)
        for plane, sides in enumerate(seen):
            for side, found in enumerate(sides):
                if not found:
                    continue
                which, acts = np.concatenate([w for w, _ in found]), np.concatenate([a for _, a in found])
                order = np.argsort(which, kind="stable")
                bounds = np.searchsorted(which[order], np.arange(channels + 1))
                for c in range(channels):
                    if bounds[c + 1] > bounds[c]:
                        thresholds[plane, c, side] = np.quantile(acts[order[bounds[c] : bounds[c + 1]]],
                                                                 np.arange(1, classes) / classes, method="lower")
        probe = cls(sig, ref, thresholds, head, cls.ORDER, partners)
        for img in symbols:
            size = img[0, 0].size

            def count(i: int, section: int, plane: int, side: int, coded: np.ndarray, key: np.ndarray,
                      img: np.ndarray = img, size: int = size) -> np.ndarray:
                if side < 0:
                    rows, ctx = ref[plane], (coded // size) * 3 + key
                else:
                    rows, ctx = sig[plane, :, side], probe._classify(plane, side, coded, key, size)
                width = rows.shape[-1]
                hist = np.bincount(ctx * width + img[i].reshape(-1)[coded], minlength=rows.size)
                rows += hist.reshape(rows.shape)
                return img[i]

            probe._steps(probe.sections, img.shape[1:], count)
        if pooled:
            sig[:] = sig.sum(2, keepdims=True)
        for table, axis in ((sig, 3), (ref, 2)):
            marginal = table.sum(axis, keepdims=True)
            table += pseudo * (marginal + 1) / (marginal + 1).sum(-1, keepdims=True)
        return cls(quantise16(sig), quantise16(ref), thresholds, head, cls.ORDER, partners)

    @classmethod
    def fit_partners(cls, symbols: list[np.ndarray], count: int = 4) -> np.ndarray:
        """(C, count): for each channel the others whose magnitudes correlate most with its
        own over the training images' positions, a magnitude measured as the number of planes
        it is significant in (its log2, to within one)."""
        planes = len(symbols[0]) // 3
        rows = []
        for img in symbols:
            first = np.full(img.shape[1:], planes)
            for i, (_, plane, kind) in enumerate(cls.passes(planes, 1, 1 + 3 * (planes - 1))):
                if kind != cls.REFINE:
                    first = np.where((first == planes) & (img[i] > 0), plane, first)
            rows.append((planes - first).reshape(len(first), -1).astype(np.float64))
        v = np.concatenate(rows, 1)
        v = (v - v.mean(1, keepdims=True)) / np.maximum(v.std(1, keepdims=True), 1e-9)
        corr = v @ v.T / v.shape[1]
        np.fill_diagonal(corr, -np.inf)  # itself last: a partner only of a channel with one other or none
        return np.argsort(-corr, axis=1, kind="stable")[:, np.arange(count) % len(corr)]
