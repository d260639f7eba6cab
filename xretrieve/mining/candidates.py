"""The files of streamed margin mining (``xretrieve.mining.streaming``), and the two steps that
write them where the work runs.

Both directions are searched in blocks of query rows; for each block the process that found its
k neighbours writes them (``CandidateWriter``) as ``{fwd,bwd}-block-NNNNNN.npy``: one record per
query row holding its k similarities, the positions of its k candidates among the other side's
mined rows, and the mean of the k similarities (the margin's neighbourhood term of that row).
Once both directions are written, each side's means are gathered into ``{src,tgt}-means.npy``
(n float32), which every scoring step memory-maps.

Scoring (``PartScoring``) takes a part (consecutive blocks of one direction), computes every
candidate's margin against the other side's means (``candidate_scores``, as ``select_pairs``
does, in the same dtypes and order), keeps each query row's best candidate (``argmax``: the
first of equal scores) and writes those edges sorted by score, best first, ties by row
(``{fwd,bwd}-part-NNNNN.npy``, ``EDGE`` records). Pair selection then merges the sorted parts
(``xretrieve.mining.stream_select``).

Every file is written to a temporary name and renamed (``save_npy``), so a file under its final
name is complete; ``complete_npy`` checks one before a resumed run keeps it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xretrieve.core.files import atomic_write, save_npy
from xretrieve.mining.margin import Margin, candidate_scores

# A mined pair or candidate edge: margin score, source and target positions (distinct rows).
EDGE = np.dtype([("score", "<f4"), ("src", "<i8"), ("tgt", "<i8")])


class Direction(enum.Enum):
    """A search direction: its query side and its candidates' side."""

    FORWARD = "fwd"  # source rows query the target index
    BACKWARD = "bwd"  # target rows query the source index

    @property
    def queries(self) -> str:
        return "src" if self is Direction.FORWARD else "tgt"

    @property
    def candidates(self) -> str:
        return "tgt" if self is Direction.FORWARD else "src"


def block_name(direction: Direction, number: int) -> str:
    return f"{direction.value}-block-{number:06d}.npy"


def part_name(direction: Direction, number: int) -> str:
    return f"{direction.value}-part-{number:05d}.npy"


def best_name(direction: Direction, number: int) -> str:
    return f"{direction.value}-best-{number:05d}.npy"


def means_name(side: str) -> str:
    return f"{side}-means.npy"


def positions_name(side: str) -> str:
    return f"{side}-positions.npy"


BEST_LOOKUP = "bwd-best.npy"


def id_dtype(count: int) -> np.dtype:
    """Candidate positions below ``count``: int32 where they fit (a third less to store)."""
    return np.dtype("<i4") if count < 2**31 else np.dtype("<i8")


def candidate_dtype(k: int, ids: np.dtype) -> np.dtype:
    """One query row's record: its k similarities (best first), its k candidates' positions and
    the mean of the k similarities."""
    return np.dtype([("sims", "<f4", (k,)), ("ids", ids, (k,)), ("mean", "<f4")])


def complete_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether ``path`` is a whole ``.npy`` file of ``shape`` and ``dtype`` (header and size)."""
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return False
    try:
        return (
            matrix.shape == shape
            and matrix.dtype == dtype
            and path.stat().st_size == matrix.offset + matrix.nbytes
        )
    finally:
        del matrix


@dataclass(frozen=True)
class CandidateWriter:
    """A ``BlockSink`` writing each block's candidates as ``block_name`` in ``directory``
    (picklable: a Ray actor runs it where it searched). ``positions``: the ``.npy`` lookup from
    global row to position among the candidate side's mined rows (None: all rows are mined);
    ``ids``: the dtype positions are stored in (``id_dtype``)."""

    directory: str
    direction: Direction
    ids: str
    positions: str | None = None

    def __call__(
        self, number: int, start: int, stop: int, sims: np.ndarray, ids: np.ndarray
    ) -> None:
        if self.positions is not None:
            ids = np.load(self.positions, mmap_mode="r")[ids]
        record = np.empty(stop - start, dtype=candidate_dtype(sims.shape[1], np.dtype(self.ids)))
        # C order, as select_pairs' (n, k) lists: a row's mean sums in the same order.
        sims = np.ascontiguousarray(sims, dtype=np.float32)
        record["sims"] = sims
        record["ids"] = ids
        record["mean"] = sims.mean(axis=1, dtype=np.float32)
        save_npy(Path(self.directory) / block_name(self.direction, number), record)


def write_positions(path: Path, rows: np.ndarray, count: int) -> None:
    """``lookup[row]`` = position of ``row`` in ``rows`` (-1 elsewhere), (count,) int64."""
    lookup = np.full(count, -1, dtype=np.int64)
    lookup[rows] = np.arange(rows.size, dtype=np.int64)
    save_npy(path, lookup)


def _write_npy_in_chunks(
    path: Path, dtype: np.dtype, rows: int, chunks: Iterator[np.ndarray]
) -> None:
    """A (rows,) ``.npy`` of ``dtype`` from consecutive ``chunks``, atomically, without holding
    it whole."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    written = 0
    with atomic_write(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": (rows,)})
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            written += len(chunk)
        if written != rows:
            raise ValueError(f"{path.name}: {written} rows written, {rows} expected")


def write_means(directory: Path, direction: Direction, blocks: int, rows: int) -> None:
    """``means_name(direction.queries)``: the ``mean`` of every record of the direction's
    ``blocks`` block files, in order ((rows,) float32)."""

    def chunks() -> Iterator[np.ndarray]:
        for number in range(blocks):
            record = np.load(directory / block_name(direction, number), mmap_mode="r")
            yield np.array(record["mean"])
            del record

    path = directory / means_name(direction.queries)
    _write_npy_in_chunks(path, np.dtype("<f4"), rows, chunks())


def write_best_lookup(directory: Path, parts: int, rows: int) -> None:
    """``BEST_LOOKUP``: for every target position, the source position of its best backward
    candidate, from the backward parts' ``best_name`` files ((rows,) int64)."""

    def chunks() -> Iterator[np.ndarray]:
        for number in range(parts):
            yield np.load(directory / best_name(Direction.BACKWARD, number))

    _write_npy_in_chunks(directory / BEST_LOOKUP, np.dtype("<i8"), rows, chunks())


@dataclass(frozen=True)
class PartScoring:
    """Score the candidates of blocks ``blocks`` of ``direction`` (query positions ``start``
    on) against the other side's means and write each row's best candidate as sorted ``EDGE``
    records (``part_name``); with ``keep_best`` also the best candidates in row order
    (``best_name``, for ``intersect``). Picklable: a Ray task runs it. Returns the rows
    scored."""

    directory: str
    direction: Direction
    number: int
    blocks: tuple[int, ...]
    start: int
    margin: Margin
    keep_best: bool = False

    def __call__(self) -> int:
        directory = Path(self.directory)
        records = [np.load(directory / block_name(self.direction, b)) for b in self.blocks]
        sims = np.concatenate([r["sims"] for r in records])
        ids = np.concatenate([r["ids"] for r in records])
        means = np.concatenate([r["mean"] for r in records])
        del records
        other = np.load(directory / means_name(self.direction.candidates), mmap_mode="r")
        scores = candidate_scores(sims, ids, means, other, self.margin)
        del sims, other
        rows = np.arange(scores.shape[0], dtype=np.int64)
        column = scores.argmax(axis=1)
        best = ids[rows, column].astype(np.int64)
        best_score = scores[rows, column]
        del scores, ids
        if self.keep_best:
            save_npy(directory / best_name(self.direction, self.number), best)
        order = np.argsort(-best_score, kind="stable")
        edges = np.empty(order.size, dtype=EDGE)
        edges["score"] = best_score[order]
        queries, found = (rows + self.start)[order], best[order]
        forward = self.direction is Direction.FORWARD
        edges["src"], edges["tgt"] = (queries, found) if forward else (found, queries)
        save_npy(directory / part_name(self.direction, self.number), edges)
        return int(order.size)
