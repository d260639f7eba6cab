"""The one reader of each file kind the library opens: a JSON object (``read_json_object``), a
JSON Lines file (``iter_jsonl``), a ``.npy`` array (``open_npy``, memory-mapped) and a ``.npy``
matrix (``open_matrix``). Each raises ``InputError`` naming the file (and the line, where there
is one) for anything it cannot take; format-specific checks stay with their callers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import InputError

logger = logging.getLogger(__name__)

# The first bytes of every .npy file (NumPy's format specification).
NPY_MAGIC = b"\x93NUMPY"
# The element types of an embedding matrix (float64 is taken, not advertised).
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(text: str) -> Any:
    """``json.loads`` without Python's extensions: NaN and Infinity are no JSON numbers."""
    return json.loads(text, parse_constant=_refuse_constant)


def _json_error(path: Path, error: ValueError, line: int | None = None) -> InputError:
    if isinstance(error, json.JSONDecodeError):
        return InputError(path, f"not valid JSON: {error.msg}", line or error.lineno)
    return InputError(path, f"not valid JSON: {error}", line)


def _kind_of(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "a number")


def read_bytes(path: Path | str) -> bytes:
    """The bytes of the file ``path``; ``InputError`` naming it when it is missing, a directory
    or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a file") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None


def read_json_object(path: Path | str) -> dict[str, Any]:
    """The JSON object in ``path`` (UTF-8, a leading BOM allowed). ``InputError`` naming the file
    when it is missing or unreadable, not UTF-8, not valid JSON (the line of the error; NaN and
    Infinity are refused, as JSON has no such numbers), or holds something else than an
    object."""
    return json_object_with_text(path)[0]


def json_object_with_text(path: Path | str) -> tuple[dict[str, Any], str]:
    """``read_json_object`` and the decoded text it was parsed from (for readers that point
    their own errors at a line of the file)."""
    path = Path(path)
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(path, f"invalid UTF-8 ({error.reason})", line) from None
    try:
        payload = _parse_json(text)
    except ValueError as error:
        raise _json_error(path, error) from None
    if not isinstance(payload, dict):
        raise InputError(path, f"expected a JSON object, found {_kind_of(payload)}")
    return payload, text


def iter_jsonl(path: Path | str, *, skip_bad: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of the JSON Lines file ``path``
    (UTF-8; 1-based line numbers). A line that is not UTF-8 or not a JSON object raises
    ``InputError`` naming the file and the line; with ``skip_bad`` it is logged and skipped
    instead (a log whose last line was torn by a crash). A missing file is an ``InputError``."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                if not text.strip():
                    continue
                record = _parse_json(text)
                if not isinstance(record, dict):
                    raise InputError(
                        path, f"expected a JSON object, found {_kind_of(record)}", number
                    )
            except UnicodeDecodeError as error:
                problem = InputError(path, f"invalid UTF-8 ({error.reason})", number)
            except InputError as error:
                problem = error
            except ValueError as error:
                problem = _json_error(path, error, number)
            else:
                yield number, record
                continue
            if not skip_bad:
                raise problem
            logger.warning("ignoring a malformed or torn line: %s", problem)


def open_npy(path: Path | str, *, kind: str = "embeddings") -> np.ndarray:
    """``path`` as a read-only memory map (nothing read but the header). ``InputError`` when
    the ``kind`` file ("embeddings", "image features", ...) is missing, or is not a ``.npy``
    array of numbers (a text file, a pickled object array)."""
    path = Path(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, f"{kind} file not found") from None
    except (ValueError, OSError, EOFError) as error:
        raise _npy_error(path, error) from None


def _npy_error(path: Path, error: Exception) -> InputError:
    # NumPy reports any file without the .npy header as "pickled data": say what it is.
    try:
        with path.open("rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except OSError:
        head = b""
    if head != NPY_MAGIC:
        return InputError(
            path,
            "not a readable .npy file: it does not start with the .npy header (a text or "
            "other file?); write embeddings with numpy.save or 'xretrieve embed'",
        )
    if "pickled" in str(error) or "Python objects" in str(error):
        return InputError(path, "holds Python objects (a pickled object array), not numbers")
    return InputError(path, f"not a readable .npy array ({error})")


def open_matrix(
    path: Path | str,
    *,
    kind: str = "embeddings",
    dtypes: tuple[np.dtype, ...] = FLOAT_DTYPES,
    non_empty: bool = False,
) -> np.ndarray:
    """``open_npy`` checked as a 2-D ``(rows, dim)`` matrix of one of ``dtypes`` (with a row at
    least, when ``non_empty``); ``InputError`` naming the file otherwise."""
    path = Path(path)
    matrix = open_npy(path, kind=kind)
    if matrix.ndim != 2 or (non_empty and matrix.shape[0] == 0):
        shape = "a non-empty 2-D" if non_empty else "a 2-D"
        raise InputError(path, f"expected {shape} (rows, dim) matrix, found shape {matrix.shape}")
    if matrix.dtype not in dtypes:
        raise InputError(path, f"expected float16 or float32 values, found {matrix.dtype}")
    return matrix
