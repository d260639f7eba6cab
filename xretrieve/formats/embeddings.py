"""Precomputed embeddings: a ``.npy`` matrix whose rows follow the lines of a data file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.readers import open_matrix


def embedding_path(emb_dir: Path | str, data_dir: Path | str, data_file: Path | str) -> Path:
    """Where the embeddings of ``data_file`` live in a directory mirroring ``data_dir``:
    ``DIR/bucc2018/de-en.test.de`` -> ``EMB/bucc2018/de-en.test.de.npy``."""
    data_file = Path(data_file)
    try:
        relative = Path(os.path.relpath(data_file.resolve(), Path(data_dir).resolve()))
    except ValueError:  # another drive on Windows
        relative = Path("..")
    if relative.parts[:1] == ("..",):
        raise InputError(data_file, f"is not inside the data directory {data_dir}")
    return Path(emb_dir) / relative.with_name(relative.name + ".npy")


def read_embeddings(path: Path | str, rows: int, dim: int | None = None) -> np.ndarray:
    """Open a ``.npy`` float16/float32 (or float64) matrix of ``(rows, dim)`` as a read-only
    memory map, checked: nothing is copied into memory, so files larger than RAM can be searched
    (``xretrieve.core.row_blocks`` reads them block by block).

    Raises ``InputError`` when the file is missing or not a ``.npy`` array, is not a 2-D floating
    matrix, its row count (or dimension, when ``dim`` is given) does not match, or a row holds
    NaN or an infinity (named by its 0-based row; in a float16 file an infinity is usually an
    overflow). The finiteness check streams over the file once.
    """
    from xretrieve.core.row_blocks import find_non_finite

    path = Path(path)
    matrix = open_matrix(path)
    if matrix.shape[0] != rows:
        raise InputError(
            path, f"has {matrix.shape[0]} rows but its data file has {rows} lines; they must match"
        )
    if dim is not None and matrix.shape[1] != dim:
        raise InputError(path, f"has dimension {matrix.shape[1]}, expected {dim}")
    bad_row = find_non_finite(matrix)
    if bad_row is not None:
        hint = (
            " (float16 overflow? write the embeddings as float32)"
            if matrix.dtype == np.float16
            else ""
        )
        raise InputError(
            path,
            f"row {bad_row} (line {bad_row + 1} of its data file) holds NaN or infinite "
            f"values{hint}; embeddings must be finite",
        )
    return matrix
