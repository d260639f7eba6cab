"""``manifest.json``: what an export directory holds and how it was made and checked."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.readers import read_json_object
from xretrieve.core.settings import Dtype, Pooling

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
# Bumped when a reader of an older export would misread it. An export of a sentence-transformers
# folder is format 2: a reader of format 1 would run its source checkpoint in torch without the
# folder's pipeline (its Dense layers). Other exports stay format 1 (``format_version_of``).
FORMAT_VERSION = 2

INPUT_NAMES = ("input_ids", "attention_mask")
EMBEDDINGS = "embeddings"
LAYER_EMBEDDINGS = "layer_embeddings"


@dataclass(frozen=True)
class ValidationFigures:
    """How closely the export matches the torch float32 model on the validation batches.

    Cosines and absolute differences are per row over every output (``embeddings`` and, when
    present, each layer of ``layer_embeddings``); ``lengths`` are the token counts of the
    validation texts (padding excluded), ``batch_sizes`` the sizes of the batches run."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    lengths: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    provider: str


@dataclass(frozen=True)
class Manifest:
    """Mirror of ``manifest.json``. ``layers`` are resolved hidden-state indices (0 = embeddings'
    output, ``num_hidden_layers`` = last); ``outputs`` names the ONNX outputs in order;
    ``fusion`` counts fused operators in the final graph (empty when not optimised);
    ``onnx_files`` lists the graph and, for large models, its external-data file."""

    source_checkpoint: str
    source_hash: str
    model_type: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    layers: tuple[int, ...]
    pooling: Pooling
    normalize: bool
    dtype: Dtype
    opset: int
    optimized: bool
    text_prefix: str
    max_length: int
    dim: int
    pad_token_id: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fusion: Mapping[str, int]
    versions: Mapping[str, str]
    created: str
    onnx_files: tuple[str, ...]
    validation: ValidationFigures | None = None
    # The attached image-text projection head ({in_dim, out_dim, pooling, layer, task}), if any.
    projection: Mapping[str, Any] | None = None
    # A calibrated margin threshold for mining with this model ({margin, k, threshold, ...}).
    mining_threshold: Mapping[str, Any] | None = None
    # How ``--dtype auto`` chose ``dtype`` on the CPU (held-out accuracies of fp32 and int8).
    dtype_choice: Mapping[str, Any] | None = None
    # Packed mode (RemovePadding + PackedAttention): runs on the CUDA execution provider only.
    packed: bool = False
    # The sentence-transformers pipeline exported with the transformer
    # (``st_pipeline.SentencePipeline.to_json`` plus ``prompt_tokens``, the leading tokens
    # excluded from pooling), or None for a plain Hugging Face checkpoint.
    sentence_transformers: Mapping[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    model_file: str = MODEL_NAME
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready values (enums as their strings, tuples as lists)."""
        payload: dict[str, Any] = {"format_version": self.format_version}
        for item in dataclasses.fields(self):
            if item.name == "format_version":
                continue
            value = getattr(self, item.name)
            if isinstance(value, ValidationFigures):
                value = dataclasses.asdict(value)
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            elif isinstance(value, Pooling | Dtype):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            payload[item.name] = value
        return payload

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Manifest:
        """Inverse of ``to_json``; unknown keys go to ``extra``. Raises ``KeyError``/``ValueError``
        for a missing key or a bad value."""
        names = {item.name for item in dataclasses.fields(cls)}
        values = {key: value for key, value in payload.items() if key in names}
        extra = {key: value for key, value in payload.items() if key not in names}
        validation = values.get("validation")
        if validation is not None:
            validation = ValidationFigures(
                min_cosine=float(validation["min_cosine"]),
                mean_cosine=float(validation["mean_cosine"]),
                max_abs_diff=float(validation["max_abs_diff"]),
                lengths=tuple(validation["lengths"]),
                batch_sizes=tuple(validation["batch_sizes"]),
                provider=str(validation["provider"]),
            )
        return cls(
            **{
                **values,
                "layers": tuple(int(layer) for layer in values["layers"]),
                "pooling": Pooling(values["pooling"]),
                "dtype": Dtype(values["dtype"]),
                "inputs": tuple(values["inputs"]),
                "outputs": tuple(values["outputs"]),
                "onnx_files": tuple(values["onnx_files"]),
                "fusion": dict(values["fusion"]),
                "versions": dict(values["versions"]),
                "validation": validation,
                "projection": dict(values["projection"]) if values.get("projection") else None,
                "mining_threshold": _mining_threshold(values.get("mining_threshold")),
                "dtype_choice": dict(values["dtype_choice"])
                if values.get("dtype_choice")
                else None,
                "packed": bool(values.get("packed", False)),
                "sentence_transformers": dict(values["sentence_transformers"])
                if values.get("sentence_transformers")
                else None,
                "extra": {**dict(values.get("extra", {})), **extra},
            }
        )


def _mining_threshold(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    from exporters.model_settings import check_mining_threshold

    try:
        return dict(check_mining_threshold(value, None))
    except InputError as error:
        raise ValueError(str(error)) from None


def format_version_of(sentence_transformers: Mapping[str, Any] | None) -> int:
    """The format of an export: 2 with a sentence-transformers pipeline, else 1 (which readers
    of format 1 read right)."""
    return FORMAT_VERSION if sentence_transformers is not None else 1


def prompt_tokens_of(manifest: Manifest) -> int:
    """Leading tokens the export's pooling leaves out (a prompt), 0 for most exports."""
    pipeline = manifest.sentence_transformers or {}
    return int(pipeline.get("prompt_tokens", 0))


def write_manifest(export_dir: Path, manifest: Manifest) -> Path:
    """Write ``export_dir/manifest.json`` atomically; returns its path."""
    path = Path(export_dir) / MANIFEST_NAME
    with atomic_write(path) as handle:
        json.dump(manifest.to_json(), handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    return path


def read_manifest(export_dir: Path | str) -> Manifest:
    """The ``Manifest`` of an export directory; ``InputError`` when it is missing, not JSON, of a
    newer format, or lacks keys."""
    path = Path(export_dir) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(export_dir, f"no {MANIFEST_NAME}: not an xretrieve export directory")
    payload = read_json_object(path)
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            path,
            f"format_version {version!r} is not supported (this xretrieve reads <= {FORMAT_VERSION})",
        )
    try:
        manifest = Manifest.from_json(payload)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(path, f"incomplete or invalid manifest: {error!r}") from None
    _check_values(path, manifest)
    return manifest


# Integer fields and their smallest valid value (max_length counts the two special tokens).
_MINIMUM = {"max_length": 2, "pad_token_id": 0, "dim": 1, "num_hidden_layers": 1, "opset": 1}


def _check_values(path: Path, manifest: Manifest) -> None:
    """Types and ranges a hand-edited manifest can break; an ``InputError`` names the key. Bounds
    that need the model (positions, vocabulary) are checked where the tokenizer is loaded."""
    for key, minimum in _MINIMUM.items():
        value = getattr(manifest, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(path, f"'{key}' must be an integer >= {minimum}, got {value!r}")
    bad_layers = [
        layer for layer in manifest.layers if not 0 <= layer <= manifest.num_hidden_layers
    ]
    if not manifest.layers or bad_layers:
        raise InputError(
            path,
            f"'layers' must be hidden-state indices 0..{manifest.num_hidden_layers}, "
            f"got {list(manifest.layers)}",
        )
    if not isinstance(manifest.text_prefix, str):
        raise InputError(path, f"'text_prefix' must be a string, got {manifest.text_prefix!r}")
    prompt_tokens = (manifest.sentence_transformers or {}).get("prompt_tokens", 0)
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        raise InputError(
            path,
            f"'sentence_transformers.prompt_tokens' must be an integer >= 0, got {prompt_tokens!r}",
        )
