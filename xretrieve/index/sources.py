"""Embedding files as one memory-mapped row space (IO only).

Several ``.npy`` files (float16 or float32, same dimension) are read as if concatenated: global
row ``r`` is row ``r - offset[i]`` of file ``i``. Files are opened with ``mmap_mode="r"`` and
converted to float32 one block at a time through ``xretrieve.core.row_blocks.RowMatrix`` (which
hands a block's pages back to the kernel once copied), so no whole file is ever copied into
memory or stays resident. Rows come back L2-normalised (cosine similarity as inner product, like
exact mining).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.readers import open_matrix
from xretrieve.core.row_blocks import RowMatrix, find_non_finite

# What an index is built from: float64 sources would be copied, not memory-mapped, at search.
_INDEX_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


@dataclass(frozen=True)
class EmbeddingFile:
    """One ``.npy`` matrix: ``rows`` x ``dim`` of ``dtype`` (``"float16"`` or ``"float32"``)."""

    path: Path
    rows: int
    dim: int
    dtype: str


def unit_rows(block: np.ndarray) -> np.ndarray:
    """``block`` (b, d) as float32 rows of unit L2 norm (all-zero rows stay zero)."""
    return _normalised(np.array(block, dtype=np.float32))  # a copy: the mmap stays untouched


def _normalised(block: np.ndarray) -> np.ndarray:
    """``block`` (a float32 array of its own) divided by its row norms, in place."""
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    block /= norms
    return block


class EmbeddingRows:
    """Read-only row access over one or more memory-mapped embedding files."""

    def __init__(self, paths: list[Path]) -> None:
        if not paths:
            raise InputError(None, "no embedding files given")
        self.paths = [Path(p) for p in paths]
        self._maps = [open_matrix(p, dtypes=_INDEX_DTYPES, non_empty=True) for p in self.paths]
        dims = {m.shape[1] for m in self._maps}
        if len(dims) > 1:
            first = self._maps[0].shape[1]
            other = next(i for i, m in enumerate(self._maps) if m.shape[1] != first)
            raise InputError(
                self.paths[other],
                f"has dimension {self._maps[other].shape[1]}, but {self.paths[0]} has {first}",
            )
        self.dim = int(self._maps[0].shape[1])
        sizes = [int(m.shape[0]) for m in self._maps]
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.count = int(self.offsets[-1])

    @property
    def files(self) -> list[EmbeddingFile]:
        return [
            EmbeddingFile(p, int(m.shape[0]), self.dim, str(m.dtype))
            for p, m in zip(self.paths, self._maps, strict=True)
        ]

    def check_finite(self) -> None:
        """``InputError`` naming the file and row of the first NaN or infinity (one streamed
        pass over every file), so that a build refuses such input before it writes anything."""
        for path, matrix in zip(self.paths, self._maps, strict=True):
            bad = find_non_finite(matrix)
            if bad is not None:
                raise InputError(path, f"NaN or infinite value in row {bad} (0-based)")

    def block(self, start: int, stop: int) -> np.ndarray:
        """Global rows ``[start, stop)`` as (stop - start, d) unit float32 rows."""
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for i in range(first, len(self._maps)):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            if lo >= stop:
                break
            first, last = max(start, lo) - lo, min(stop, hi) - lo
            part = RowMatrix(self._maps[i]).block(first, last)
            parts.append(self._checked(i, part, np.arange(first, last)))
        return _normalised(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The given global rows (any shape of int ids) as unit float32, shape ``ids.shape + (d,)``."""
        flat = np.asarray(ids, dtype=np.int64).ravel()
        unique, inverse = np.unique(flat, return_inverse=True)
        out = np.empty((unique.size, self.dim), dtype=np.float32)
        file_of = np.searchsorted(self.offsets, unique, side="right") - 1
        for i in np.unique(file_of).tolist():
            where = np.flatnonzero(file_of == i)
            local = unique[where] - self.offsets[i]
            part = RowMatrix(self._maps[i], rows=local).block(0, local.size)
            out[where] = self._checked(i, part, local)
        return _normalised(out)[inverse].reshape(*np.shape(ids), self.dim)

    def _checked(self, file: int, part: np.ndarray, local_rows: np.ndarray) -> np.ndarray:
        """``part`` (rows ``local_rows`` of file ``file``, float32) unless it holds NaN or inf."""
        bad_position = find_non_finite(part)
        if bad_position is not None:
            bad = int(local_rows[bad_position])
            raise InputError(self.paths[file], f"NaN or infinite value in row {bad} (0-based)")
        return part
