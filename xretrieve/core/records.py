"""Typed records read back from JSON manifests: a hand-edited value of the wrong type (``"600"``
for 600, ``1.0`` for a version) is named as such, instead of surfacing later as a puzzling
mismatch ("the manifest says 600" next to 600)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError

_KINDS = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}


def _matches(kind: Any, value: Any) -> bool:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_matches(option, value) for option in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True  # nested records and collections: the caller converts them


def _wanted(kind: Any) -> str:
    options = typing.get_args(kind) if typing.get_origin(kind) else (kind,)
    return " or ".join(
        "null" if option is type(None) else _KINDS.get(option, str(option)) for option in options
    )


def record_fields(cls: type, data: Any, path: Path, what: str) -> dict[str, Any]:
    """The fields of the dataclass ``cls`` from the JSON object ``data`` (``what`` names it in
    messages, e.g. "shard 2"): every field without a default present, every scalar one (int,
    float, bool, str, optionally None) of its type; unknown keys are ignored. ``InputError``
    naming ``path`` otherwise."""
    if not isinstance(data, dict):
        raise InputError(path, f"{what} is not a JSON object")
    hints = typing.get_type_hints(cls)
    fields = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            if field.default is dataclasses.MISSING:
                raise InputError(path, f"{what} lacks the field {field.name!r}")
            continue
        value = data[field.name]
        if not _matches(hints[field.name], value):
            raise InputError(
                path,
                f"{what}: {field.name!r} is {value!r}, of the wrong type: expected "
                f"{_wanted(hints[field.name])} (hand-edited?)",
            )
        fields[field.name] = value
    return fields
