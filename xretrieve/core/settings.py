"""The one vocabulary of fixed-choice settings: ``Backend``, ``Device``, ``Dtype``, ``Pooling``,
a model's ``SourceKind`` and where a mining threshold came from (``ThresholdSource``).

Plain values, no heavy imports. A user's string (a CLI option, a config file, an argument of
the Python API) becomes a member once, at the edge, through ``parse_setting`` (or its shorthands
``parse_backend``, ``parse_device``, ``parse_dtype``, ``parse_pooling``); library code compares
members. The members are ``str`` subclasses whose ``.value`` is what JSON files, manifests and
cache ids hold. ``dtype_on`` is the one rule from a device and backend to the precision an encoder
runs in."""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import Any, TypeVar

from xretrieve.core.errors import ArgumentError


class Backend(str, enum.Enum):
    """What runs the encoder."""

    ORT = "ort"  # ONNX Runtime on an export (a checkpoint is exported on first use)
    TORCH = "torch"  # the checkpoint in torch (an export's source checkpoint)


class Device(str, enum.Enum):
    """Where the encoder runs; ``resolve_device`` turns AUTO into CUDA or CPU."""

    AUTO = "auto"  # CUDA when the backend can use a GPU here, else the CPU
    CUDA = "cuda"
    CPU = "cpu"


class Pooling(str, enum.Enum):
    """How token vectors become one sentence vector."""

    MEAN = "mean"  # mean over the tokens the attention mask keeps (padding excluded)
    CLS = "cls"  # the first token's vector (<s> / [CLS])
    # sentence-transformers' other pooling modes (its names), each over the kept tokens:
    MAX = "max"  # elementwise maximum
    MEAN_SQRT_LEN = "mean_sqrt_len_tokens"  # the sum divided by the square root of the count
    WEIGHTED_MEAN = "weightedmean"  # mean weighted by position (1, 2, ...: later tokens count more)
    LAST_TOKEN = "lasttoken"  # the last kept token's vector


class Dtype(str, enum.Enum):
    """Weights and compute precision of an exported graph (inputs and outputs stay int64/float32),
    or of an encoder run by torch (FP16, FP32)."""

    FP16 = "fp16"  # for the CUDA execution provider
    FP32 = "fp32"  # for the CPU execution provider (and reference checks)
    # fp32 graph whose MatMul weights are int8 (per output column) and whose activations are
    # quantised per token, or with a scale calibrated at export where the operator takes one
    # scale (``exporters.int8_activations``), for the CPU execution provider.
    INT8 = "int8"
    # Chosen at export: fp16 where a CUDA GPU is usable, else int8 when it keeps the held-out
    # retrieval accuracy of fp32 (``exporters.dtype_choice``), else fp32. Never in a manifest.
    # For an encoder: ``dtype_on`` its device and backend.
    AUTO = "auto"


class SourceKind(str, enum.Enum):
    """What a model directory holds."""

    EXPORT = "export"  # an ONNX export with manifest.json
    CHECKPOINT = "checkpoint"  # a Hugging Face checkpoint with config.json


class ThresholdSource(str, enum.Enum):
    """Where the mining threshold applied came from."""

    GIVEN = "given"  # the caller's
    TUNED = "tuned"  # chosen on a tuning split's gold
    MODEL = "model"  # calibrated with the model (its manifest or xretrieve.json)
    DEFAULT = "default"  # the ratio margin's default (``mining.api.DEFAULT_RATIO_THRESHOLD``)
    NONE = "none"  # no threshold: every selected pair is kept


_Member = TypeVar("_Member", bound=enum.Enum)


def parse_setting(
    argument: str, kind: type[_Member], value: Any, allowed: Collection[_Member] | None = None
) -> _Member:
    """``value`` (a member of ``kind`` or its value) as the member, one of ``allowed`` (default:
    every member). ``ArgumentError`` naming ``argument`` otherwise: an unknown value, or a member
    that is not allowed here."""
    choices = tuple(kind) if allowed is None else tuple(allowed)
    names = ", ".join(str(member.value) for member in choices)
    try:
        member = value if isinstance(value, kind) else kind(value)
    except (ValueError, TypeError):
        raise ArgumentError(
            argument, f"unknown {argument} {value!r}; {{{argument}}} must be one of {names}"
        ) from None
    if member not in choices:
        raise ArgumentError(argument, f"must be one of {names}, not {value!r}")
    return member


def parse_backend(value: Backend | str, argument: str = "backend") -> Backend:
    """``value`` ("ort", "torch" or a member) as a ``Backend``; ``ArgumentError`` otherwise."""
    return parse_setting(argument, Backend, value)


def parse_device(value: Device | str, argument: str = "device") -> Device:
    """``value`` ("auto", "cuda", "cpu" or a member) as a ``Device``; ``ArgumentError``
    otherwise."""
    return parse_setting(argument, Device, value)


def parse_dtype(
    value: Dtype | str, argument: str = "dtype", allowed: Collection[Dtype] | None = None
) -> Dtype:
    """``value`` (a ``Dtype`` or its value, one of ``allowed``) as a ``Dtype``; ``ArgumentError``
    otherwise."""
    return parse_setting(argument, Dtype, value, allowed)


def parse_pooling(value: Pooling | str, argument: str = "pooling") -> Pooling:
    """``value`` (a member or its value: "mean", "cls", "max", ...) as a ``Pooling``;
    ``ArgumentError`` otherwise."""
    return parse_setting(argument, Pooling, value)


def dtype_on(device: Device, backend: Backend, dtype: Dtype = Dtype.AUTO) -> Dtype:
    """The precision an encoder of ``backend`` runs in on ``device`` (CUDA or CPU): ``dtype``
    itself unless it is AUTO. AUTO is FP16 on CUDA; on the CPU it is FP32 for torch and stays
    AUTO for ONNX Runtime, whose export of a checkpoint then settles it: INT8 where int8 keeps
    the held-out retrieval accuracy of fp32 in every language, else FP32
    (``exporters.dtype_choice``)."""
    if dtype is not Dtype.AUTO:
        return dtype
    if device is Device.CUDA:
        return Dtype.FP16
    return Dtype.AUTO if backend is Backend.ORT else Dtype.FP32
