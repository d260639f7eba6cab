"""Row blocks of embedding matrices that need not fit in memory.

A ``RowMatrix`` is a ``(rows, dim)`` float matrix read a block of rows at a time: an in-memory
array, a memory-mapped ``.npy`` file (``np.load(..., mmap_mode="r")``), or a subset of another
matrix's rows (the distinct texts of a corpus). Blocks come back as float32, so float16 and
float32 files are read alike. For a memory map, the pages of a block are handed back to the
kernel once the block is copied out (``madvise(MADV_DONTNEED)``), so the resident memory of a
search over files larger than RAM stays at the size of its blocks.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# Rows of a block when a caller gives no size: 64 MiB of float32 at dimension 1024.
DEFAULT_BLOCK_ROWS = 16384


class RowMatrix:
    """A ``(rows, dim)`` float16/float32/float64 matrix read in row blocks.

    ``array`` is an ``np.ndarray`` or ``np.memmap``; ``rows`` (r,) int64, when given, selects
    and orders the rows the matrix exposes (row i of this matrix is ``array[rows[i]]``);
    ``source`` names the file the rows come from, for messages.
    """

    def __init__(
        self, array: np.ndarray, *, rows: np.ndarray | None = None, source: Path | None = None
    ) -> None:
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D (rows, dim) matrix, got shape {array.shape}")
        self.array = array
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.source = source if source is not None else _memmap_path(array)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.array.shape[0] if self.rows is None else int(self.rows.shape[0])
        return n, int(self.array.shape[1])

    @property
    def nbytes_float32(self) -> int:
        """Bytes of the whole matrix as float32."""
        n, dim = self.shape
        return 4 * n * dim

    def select(self, rows: np.ndarray) -> RowMatrix:
        """The matrix of rows ``rows`` of this one (no copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.rows is None and rows.shape[0] == self.array.shape[0]:
            if np.array_equal(rows, np.arange(rows.shape[0])):
                return self
        base_rows = rows if self.rows is None else self.rows[rows]
        return RowMatrix(self.array, rows=base_rows, source=self.source)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new C-contiguous float32 array."""
        return self.native_block(start, stop).astype(np.float32, copy=False)

    def native_block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new C-contiguous array of the stored float16/float32 type
        (float64 becomes float32), for a device that converts faster than the host."""
        dtype = np.float32 if self.array.dtype == np.float64 else self.array.dtype
        if self.rows is None:
            block = np.array(self.array[start:stop], dtype=dtype, order="C")
            _release_pages(self.array, start, stop)
            return block
        index = self.rows[start:stop]
        block = np.array(self.array[index], dtype=dtype, order="C")
        if index.size:
            _release_pages(self.array, int(index.min()), int(index.max()) + 1)
        return block

    @contextmanager
    def native_rows(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Rows ``start:stop`` in the stored dtype, without a copy where the rows are one
        contiguous float16/float32 slice (read-only: copy before changing it); the pages of a
        memory map are released on exit. For uploads to a device, which copy anyway."""
        if self.rows is not None or self.array.dtype == np.float64:
            yield self.native_block(start, stop)
            return
        view = self.array[start:stop]
        if not view.flags.c_contiguous:
            view = np.ascontiguousarray(view)
        try:
            yield view
        finally:
            _release_pages(self.array, start, stop)

    def blocks(self, block_rows: int = DEFAULT_BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` for consecutive blocks of at most ``block_rows`` rows."""
        n = self.shape[0]
        for start in range(0, n, block_rows):
            yield start, self.block(start, min(start + block_rows, n))

    def to_array(self) -> np.ndarray:
        """The whole matrix as one float32 array (for callers that need it all in memory)."""
        if self.rows is None:
            return np.ascontiguousarray(self.array, dtype=np.float32)
        return self.block(0, self.shape[0])


Rows = np.ndarray | RowMatrix


def as_row_matrix(matrix: Rows) -> RowMatrix:
    """``matrix`` itself if it is a ``RowMatrix``, else a ``RowMatrix`` over the array."""
    if isinstance(matrix, RowMatrix):
        return matrix
    # np.asarray would turn a memory map into a plain view and lose its page release.
    return RowMatrix(matrix if isinstance(matrix, np.ndarray) else np.asarray(matrix))


def select_rows(matrix: Rows, rows: np.ndarray) -> Rows:
    """Rows ``rows`` of ``matrix``: fancy indexing for an in-memory array, a lazy ``RowMatrix``
    for a memory map (which indexing would copy whole into memory)."""
    if isinstance(matrix, RowMatrix) or isinstance(matrix, np.memmap):
        return as_row_matrix(matrix).select(rows)
    return matrix[rows]


def find_non_finite(matrix: Rows, block_rows: int = DEFAULT_BLOCK_ROWS) -> int | None:
    """The first row holding NaN or an infinity, or None (one streamed pass)."""
    for start, block in as_row_matrix(matrix).blocks(block_rows):
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def _memmap_path(array: np.ndarray) -> Path | None:
    filename = getattr(array, "filename", None)
    return Path(filename) if filename else None


def _release_pages(array: np.ndarray, start: int, stop: int) -> None:
    """Give back the resident pages of rows ``start:stop`` of a memory map (a no-op otherwise)."""
    if not isinstance(array, np.memmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    buffer = getattr(array, "_mmap", None)
    if buffer is None or array.ndim != 2 or not array.flags.c_contiguous:
        return
    row_bytes = array.strides[0]
    # np.memmap maps from the allocation-granularity boundary below the array's file offset.
    base = int(array.offset) % mmap.ALLOCATIONGRANULARITY
    first = base + start * row_bytes
    last = base + stop * row_bytes
    first -= first % mmap.PAGESIZE
    try:
        buffer.madvise(mmap.MADV_DONTNEED, first, min(last, len(buffer)) - first)
    except (OSError, ValueError):  # advice only: never fail a read over it
        pass
