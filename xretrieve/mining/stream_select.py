"""Pair selection over sorted edge parts, streamed: the ``Mode`` semantics of
``xretrieve.mining.margin.select_pairs`` without holding the edges.

``select_pairs`` orders its pool of edges (forward bests by source row, then backward bests by
target row) with ``argsort(-score, kind="stable")``. Here every edge has a key ``(score_keys,
pool)``: ``score_keys`` maps -score to integers in the order numpy sorts floats (NaN last, -0.0
equal to 0.0), ``pool`` is the edge's position in that pool. Each part file is sorted by that
key (``PartScoring``: by score, ties by row), and ``merged_edges`` merges the parts in a stream:
it reads a buffer of each part, emits every buffered edge not above the smallest last key of the
buffers (no unread edge can come before them), in key order, and refills the emptied buffers.

``select_edges`` applies the mode to the merged stream: ``forward`` and ``backward`` pass it
through; ``intersect`` keeps a forward edge whose target's backward best is its source (a
memory-mapped lookup); ``max`` keeps "taken" bitmaps of both sides (one bit per row) and walks
the stream in chunks: edges touching a taken row are dropped, the rest go through the same
greedy as ``greedy_one_to_one`` (``greedy_in_order``), whose kept edges mark their rows taken.
The sequential greedy over the whole stream is the same as over its chunks in turn, so the
pairs equal ``select_pairs``' bit for bit, ties included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xretrieve.mining.candidates import EDGE
from xretrieve.mining.margin import Mode, greedy_in_order

# A position in the merged stream: (score key, pool position) of an edge; the stream continues
# after it.
Key = tuple[int, int]


def score_keys(score: np.ndarray) -> np.ndarray:
    """(e,) int32 keys ordered as numpy sorts ``-score`` (float32): ascending, NaN last, -0.0
    equal to 0.0. Equal keys are equal in that sort (a stable sort keeps their order)."""
    negated = -np.asarray(score, dtype=np.float32)
    negated = np.where(negated == 0, np.float32(0), negated)  # -0.0 sorts as 0.0
    negated = np.where(np.isnan(negated), np.float32(np.nan), negated)  # one NaN, sign clear
    bits = negated.view(np.int32)
    # Negative floats order backwards as integers: flip their magnitude bits.
    return np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)


@dataclass(frozen=True)
class SortedPart:
    """An edge file sorted by key, whose pool position is ``base + edge[field]``."""

    path: Path
    field: str
    base: int

    def pools(self, edges: np.ndarray) -> np.ndarray:
        return edges[self.field] + self.base


def _count_upto(keys: np.ndarray, pools: np.ndarray, key: Key) -> int:
    """Edges of a key-sorted buffer at or before ``key``."""
    first = int(np.searchsorted(keys, key[0], side="left"))
    last = int(np.searchsorted(keys, key[0], side="right"))
    return first + int(np.searchsorted(pools[first:last], key[1], side="right"))


@dataclass
class _Reader:
    """Reads one sorted part in buffers, without keeping the file open."""

    part: SortedPart
    offset: int  # bytes of the .npy header
    count: int
    position: int = 0
    edges: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=EDGE))
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    pools: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @classmethod
    def open(cls, part: SortedPart, after: Key | None) -> _Reader:
        edges = np.load(part.path, mmap_mode="r")
        if edges.dtype != EDGE or edges.ndim != 1:
            raise ValueError(f"{part.path}: not a file of edges")
        reader = cls(part, int(edges.offset), int(edges.shape[0]))
        if after is not None:
            reader.position = _count_upto(score_keys(edges["score"]), part.pools(edges), after)
        del edges
        return reader

    def fill(self, rows: int) -> None:
        if self.edges.size or self.position >= self.count:
            return
        take = min(rows, self.count - self.position)
        offset = self.offset + self.position * EDGE.itemsize
        self.edges = np.fromfile(self.part.path, dtype=EDGE, count=take, offset=offset)
        if self.edges.size != take:
            raise ValueError(f"{self.part.path}: truncated")
        self.position += take
        self.keys = score_keys(self.edges["score"])
        self.pools = self.part.pools(self.edges)

    def take(self, upto: Key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        count = _count_upto(self.keys, self.pools, upto)
        taken = self.edges[:count], self.keys[:count], self.pools[:count]
        self.edges, self.keys, self.pools = (
            self.edges[count:],
            self.keys[count:],
            self.pools[count:],
        )
        return taken


def merged_edges(
    parts: Sequence[SortedPart], buffer_rows: int, after: Key | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The edges of all ``parts`` in key order, from after ``after`` (None: the start), as
    chunks ``(edges, keys, pools)``; at most ``buffer_rows`` edges of each part are held."""
    readers = [_Reader.open(part, after) for part in parts]
    while True:
        for reader in readers:
            reader.fill(buffer_rows)
        live = [reader for reader in readers if reader.edges.size]
        if not live:
            return
        bound = min((int(r.keys[-1]), int(r.pools[-1])) for r in live)
        chunks = [r.take(bound) for r in live]
        edges = np.concatenate([c[0] for c in chunks])
        keys = np.concatenate([c[1] for c in chunks])
        pools = np.concatenate([c[2] for c in chunks])
        order = np.lexsort((pools, keys))
        yield edges[order], keys[order], pools[order]


def bitmap(count: int) -> np.ndarray:
    """``count`` bits, all clear."""
    return np.zeros((count + 7) // 8, dtype=np.uint8)


def bits_set(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(e,) bool: whether the bit of each of ``rows`` is set."""
    return ((bits[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1).astype(bool)


def set_bits(bits: np.ndarray, rows: np.ndarray) -> None:
    np.bitwise_or.at(bits, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))


@dataclass
class Taken:
    """The rows of each side that ``max`` has matched: one bit per row."""

    src: np.ndarray
    tgt: np.ndarray

    @classmethod
    def empty(cls, n_src: int, n_tgt: int) -> Taken:
        return cls(bitmap(n_src), bitmap(n_tgt))

    def add(self, edges: np.ndarray) -> None:
        set_bits(self.src, edges["src"])
        set_bits(self.tgt, edges["tgt"])

    def free(self, edges: np.ndarray) -> np.ndarray:
        return ~(bits_set(self.src, edges["src"]) | bits_set(self.tgt, edges["tgt"]))


def greedy_chunk(edges: np.ndarray, taken: Taken) -> np.ndarray:
    """Positions in ``edges`` (in stream order) that the sequential greedy keeps after the rows
    in ``taken``; those rows are added to ``taken``."""
    free = np.flatnonzero(taken.free(edges))
    if not free.size:
        return free
    candidates = edges[free]
    src, src_local = np.unique(candidates["src"], return_inverse=True)
    tgt, tgt_local = np.unique(candidates["tgt"], return_inverse=True)
    kept = free[greedy_in_order(src_local, tgt_local, src.size, tgt.size)]
    taken.add(edges[kept])
    return kept


def select_edges(
    chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
    mode: Mode,
    *,
    taken: Taken | None = None,
    best_lookup: Path | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The pairs ``mode`` selects from merged ``chunks`` (``merged_edges`` of the forward parts
    for ``forward`` and ``intersect``, the backward parts for ``backward``, both for ``max``),
    in order, as chunks ``(edges, keys, pools)``. ``max`` needs ``taken`` (the rows matched by
    the pairs before the stream's start), ``intersect`` the ``BEST_LOOKUP`` file."""
    lookup = np.load(best_lookup, mmap_mode="r") if best_lookup is not None else None
    for edges, keys, pools in chunks:
        if mode is Mode.MAX:
            assert taken is not None
            kept = greedy_chunk(edges, taken)
        elif mode is Mode.INTERSECT:
            assert lookup is not None
            kept = np.flatnonzero(lookup[edges["tgt"]] == edges["src"])
        else:
            yield edges, keys, pools
            continue
        if kept.size:
            yield edges[kept], keys[kept], pools[kept]
