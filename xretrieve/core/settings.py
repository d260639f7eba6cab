"""The fixed-choice settings of an encoder: ``Backend``, ``Device`` and a model's ``SourceKind``.

Plain values, no heavy imports. User strings (CLI options, config files) become members once,
through ``parse_backend`` / ``parse_device``; library code compares members. The members are
``str`` subclasses whose ``.value`` is what JSON files and reports hold."""

from __future__ import annotations

import enum
from typing import TypeVar

from xretrieve.core.errors import XRetrieveError


class Backend(str, enum.Enum):
    """What runs the encoder."""

    ORT = "ort"  # ONNX Runtime on an export (a checkpoint is exported on first use)
    TORCH = "torch"  # the checkpoint in torch (an export's source checkpoint)


class Device(str, enum.Enum):
    """Where the encoder runs; ``resolve_device`` turns AUTO into CUDA or CPU."""

    AUTO = "auto"  # CUDA when the backend can use a GPU here, else the CPU
    CUDA = "cuda"
    CPU = "cpu"


class SourceKind(str, enum.Enum):
    """What a model directory holds."""

    EXPORT = "export"  # an ONNX export with manifest.json
    CHECKPOINT = "checkpoint"  # a Hugging Face checkpoint with config.json


_Choice = TypeVar("_Choice", Backend, Device)


def _parse(kind: type[_Choice], value: _Choice | str, what: str) -> _Choice:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise XRetrieveError(f"unknown {what} {value!r}; choose one of {choices}") from None


def parse_backend(value: Backend | str) -> Backend:
    """``value`` ("ort", "torch" or a member) as a ``Backend``; ``XRetrieveError`` otherwise."""
    return _parse(Backend, value, "backend")


def parse_device(value: Device | str) -> Device:
    """``value`` ("auto", "cuda", "cpu" or a member) as a ``Device``; ``XRetrieveError``
    otherwise."""
    return _parse(Device, value, "device")
