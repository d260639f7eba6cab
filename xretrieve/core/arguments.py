"""Checks of the Python API's arguments, before any work: each returns the value in the form
the code uses, or raises ``ArgumentError`` naming the parameter, what it takes and what it got
(the CLI's options are checked by typer; these are for callers in Python)."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xretrieve.core.errors import ArgumentError


def _kind(value: Any) -> str:
    return type(value).__name__


def check_texts(name: str, texts: Any) -> tuple[str, ...]:
    """``texts`` as a tuple of ``str``: a list, tuple or any other iterable of strings. A bare
    ``str`` (which would iterate as characters), ``bytes`` or a mapping is refused, and so is
    any item that is not a ``str`` (named by its position)."""
    if isinstance(texts, str):
        raise ArgumentError(
            name,
            f"must be a list of sentences, not one str ({texts[:30]!r}); for a single sentence "
            "pass [text]",
        )
    if isinstance(texts, bytes | bytearray | Mapping) or not isinstance(texts, Iterable):
        raise ArgumentError(name, f"must be a list of str, not {_kind(texts)}")
    items = tuple(texts)
    for position, item in enumerate(items):
        if not isinstance(item, str):
            hint = (
                " (decode bytes first, e.g. text.decode('utf-8'))"
                if isinstance(item, bytes)
                else ""
            )
            raise ArgumentError(f"{name}[{position}]", f"must be a str, not {_kind(item)}{hint}")
    return items


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (a Python or numpy integer; not a bool,
    float or string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(name, f"must be an integer >= {minimum}, not {value!r}")
    if value < minimum:
        raise ArgumentError(name, f"must be an integer >= {minimum}, not {value!r}")
    return int(value)


def check_threshold(name: str, value: Any) -> float | None:
    """None, or ``value`` as a finite ``float`` (an int or float; not a bool or string)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(name, f"must be a finite number or None, not {value!r}")
    if not math.isfinite(value):
        raise ArgumentError(name, f"must be a finite number, not {value!r}")
    return float(value)


def check_optional_str(name: str, value: Any) -> str | None:
    """None or a ``str``."""
    if value is not None and not isinstance(value, str):
        raise ArgumentError(name, f"must be a str or None, not {_kind(value)}")
    return value


def check_path(name: str, value: Any) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path``."""
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise ArgumentError(name, f"must be a path (str or pathlib.Path), not {_kind(value)}")
    return Path(value)


def check_model(name: str, value: Any) -> Any:
    """A model name or folder (``str``, ``os.PathLike``), None (the default model), or a loaded
    encoder: an object with an ``encode`` method."""
    if value is None or isinstance(value, str | os.PathLike):
        return value
    if not callable(getattr(value, "encode", None)):
        raise ArgumentError(
            name,
            "must be a model name or folder (str or pathlib.Path), None, or a loaded encoder "
            f"(with .encode(texts)), not {_kind(value)}",
        )
    return value


def check_progress(value: Any) -> Any:
    """None or a callable ``progress(stage, done, total)``."""
    if value is not None and not callable(value):
        raise ArgumentError("progress", f"must be a callable or None, not {_kind(value)}")
    return value
