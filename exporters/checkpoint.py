"""Checks on a Hugging Face checkpoint directory that need no model code: it exists, it has a
config of a built-in architecture, no remote code, and safetensors weights.

A sentence-transformers folder is a checkpoint too: its transformer is read from its
Transformer module's folder (``st_pipeline.transformer_directory``: usually the folder itself)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from exporters.st_pipeline import transformer_directory
from xretrieve.core.errors import InputError
from xretrieve.core.readers import read_json_object

# model_type -> attribute path of the ``nn.ModuleList`` of transformer layers. Only architectures
# whose forward takes (input_ids, attention_mask) and records hidden_states per layer belong here.
LAYER_LISTS: dict[str, tuple[str, ...]] = {
    "xlm-roberta": ("encoder", "layer"),
    "roberta": ("encoder", "layer"),
    "bert": ("encoder", "layer"),
    "distilbert": ("transformer", "layer"),
}
SUPPORTED_MODEL_TYPES = tuple(LAYER_LISTS)


def _refuse_remote_code(path: Path, payload: dict[str, Any]) -> None:
    if "auto_map" in payload:
        raise InputError(
            path,
            "the checkpoint asks for remote code (auto_map); xretrieve never runs code from a "
            f"checkpoint: use a built-in architecture ({', '.join(SUPPORTED_MODEL_TYPES)})",
        )


def read_checkpoint_config(checkpoint_dir: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, after the checks: the directory and file
    exist, neither config.json nor tokenizer_config.json has ``auto_map`` (remote code), and
    ``model_type`` is supported. Raises ``InputError``."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise InputError(checkpoint_dir, "checkpoint directory does not exist")
    checkpoint_dir = transformer_directory(checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise InputError(checkpoint_dir, "no config.json: not a Hugging Face checkpoint directory")
    config = read_json_object(config_path)
    _refuse_remote_code(config_path, config)
    tokenizer_config_path = checkpoint_dir / "tokenizer_config.json"
    if tokenizer_config_path.is_file():
        _refuse_remote_code(tokenizer_config_path, read_json_object(tokenizer_config_path))
    model_type = config.get("model_type")
    if model_type not in LAYER_LISTS:
        raise InputError(
            config_path,
            f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}",
        )
    return config


def num_hidden_layers(config: dict[str, Any]) -> int:
    """Transformer layers of a checkpoint from its config.json dict (DistilBERT says n_layers)."""
    value = config.get("num_hidden_layers", config.get("n_layers"))
    if not isinstance(value, int) or value < 1:
        raise InputError(None, f"config.json has no valid num_hidden_layers ({value!r})")
    return value


def check_weights(checkpoint_dir: Path) -> None:
    """Raise ``InputError`` unless the weights are in safetensors files that are whole (see
    ``check_safetensors``); pickle-only weights (pytorch_model.bin) are refused, never loaded,
    because unpickling can run code."""
    checkpoint_dir = transformer_directory(checkpoint_dir)
    single = checkpoint_dir / "model.safetensors"
    index = checkpoint_dir / "model.safetensors.index.json"
    if single.is_file():
        check_safetensors(single)
        return
    if index.is_file():
        for shard in _index_shards(index):
            check_safetensors(checkpoint_dir / shard)
        return
    pickled = [
        name
        for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")
        if (checkpoint_dir / name).is_file()
    ]
    if pickled:
        raise InputError(
            checkpoint_dir,
            f"weights only in {pickled[0]} (a pickle, which can run code when loaded); convert "
            "them to model.safetensors on a machine you trust (AutoModel.from_pretrained(dir)"
            ".save_pretrained(dir, safe_serialization=True)) and export again",
        )
    raise InputError(checkpoint_dir, "no model.safetensors (or model.safetensors.index.json)")


# Weights of heads that sit on top of an encoder (pre-training and task heads); a checkpoint
# saved from e.g. XLMRobertaForMaskedLM carries them, and an encoder rightly leaves them unused.
_HEAD_PREFIXES = (
    "pooler.",
    "lm_head.",
    "cls.",
    "vocab_transform.",
    "vocab_layer_norm.",
    "vocab_projector.",
    "classifier.",
    "pre_classifier.",
    "qa_outputs.",
)


def check_loaded_weights(
    checkpoint_dir: Path, missing: Iterable[str], unexpected: Iterable[str]
) -> None:
    """Raise ``InputError`` naming the tensors when loading left encoder parameters without a
    stored value (they would be random) or stored tensors unused that are no known head's:
    ``missing``/``unexpected`` are transformers' ``missing_keys``/``unexpected_keys``. The pooler
    is never used for sentence embeddings, so its absence is not an error."""
    missing = sorted(name for name in missing if not name.startswith("pooler."))
    unexpected = sorted(name for name in unexpected if not name.startswith(_HEAD_PREFIXES))
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)} (they would be random)")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)} (no parameter of the model takes them)")
    if problems:
        raise InputError(
            Path(checkpoint_dir) / "model.safetensors",
            "weights do not match the architecture in config.json: " + "; ".join(problems),
        )


def _names(names: list[str], shown: int = 8) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# The element sizes of safetensors dtypes, in bytes (the format's own list).
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# safetensors itself refuses headers above 100 MB.
_SAFETENSORS_MAX_HEADER = 100_000_000


def check_safetensors(path: Path) -> None:
    """Raise ``InputError`` naming ``path`` unless it is a whole safetensors file: an 8-byte
    little-endian header length, a JSON header of ``{name: {dtype, shape, data_offsets}}``, and
    tensor data that covers exactly the rest of the file. Reads only the header, so it is cheap
    on multi-GB weights; it finds empty, truncated and overwritten files before a loader fails
    on them with a traceback."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if len(prefix) < 8 or not 0 < length <= min(size - 8, _SAFETENSORS_MAX_HEADER):
                raise InputError(
                    path,
                    f"not a safetensors file ({size} bytes, "
                    + ("empty" if size == 0 else "no valid header length")
                    + "): the weights are corrupt or truncated; copy or save them again",
                )
            raw = handle.read(length)
    except OSError as error:
        raise InputError(path, f"cannot read the weights: {error.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise InputError(
            path, "not a safetensors file (its header is not JSON): the weights are corrupt"
        )
    data_size = size - 8 - length
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_entry_problem(entry, data_size)
        if problem:
            raise InputError(
                path, f"tensor {name!r}: {problem}: the weights are truncated or corrupt"
            )
        end = max(end, entry["data_offsets"][1])
    if end != data_size:
        raise InputError(
            path,
            f"the header describes {end} bytes of tensor data, the file holds {data_size}: "
            "the weights are truncated or corrupt; copy or save them again",
        )


def _tensor_entry_problem(entry: Any, data_size: int) -> str | None:
    if not isinstance(entry, dict):
        return "not a tensor description"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        return f"bad dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"bad shape {shape!r}"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        return f"bad data_offsets {offsets!r}"
    if offsets[1] > data_size:
        return f"data ends at byte {offsets[1]}, beyond the {data_size} bytes in the file"
    item = _SAFETENSORS_DTYPE_BYTES.get(dtype)
    if item is None:  # a dtype newer than this list (sub-byte floats): its size is not checked
        return None
    count = 1
    for dim in shape:
        count *= dim
    if count * item != offsets[1] - offsets[0]:
        return (
            f"shape {shape} needs {count * item} bytes, data_offsets give {offsets[1] - offsets[0]}"
        )
    return None


def _index_shards(index: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names (its ``weight_map`` values)."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(index, "expected a non-empty 'weight_map' object")
    shards = sorted({str(name) for name in weight_map.values()})
    for shard in shards:
        if Path(shard).name != shard:
            raise InputError(index, f"shard {shard!r} is not a file name in the checkpoint")
    return shards


def check_tokenizer(checkpoint_dir: Path) -> None:
    """Raise ``InputError`` unless the checkpoint has tokenizer files an export can carry."""
    checkpoint_dir = transformer_directory(checkpoint_dir)
    names = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "spiece.model")
    if not any((checkpoint_dir / name).is_file() for name in names):
        raise InputError(checkpoint_dir, f"no tokenizer files (looked for {', '.join(names)})")


# The image-text projection head a trained checkpoint may carry (written by xretrieve.trainer).
PROJECTION_WEIGHTS = "projection.safetensors"
PROJECTION_INFO = "projection.json"


def read_projection_info(checkpoint_dir: Path, hidden_size: int) -> dict[str, Any]:
    """``projection.json`` of a checkpoint ({in_dim, out_dim, pooling, layer, ...}) after the
    checks: both projection files exist and ``in_dim`` equals the encoder's ``hidden_size``.
    Raises ``InputError``."""
    checkpoint_dir = Path(checkpoint_dir)
    info_path = checkpoint_dir / PROJECTION_INFO
    if not info_path.is_file() or not (checkpoint_dir / PROJECTION_WEIGHTS).is_file():
        raise InputError(
            checkpoint_dir,
            f"no projection head ({PROJECTION_WEIGHTS} + {PROJECTION_INFO}): only checkpoints "
            "trained with the image-text task have one",
        )
    info = read_json_object(info_path)
    for key in ("in_dim", "out_dim"):
        if not isinstance(info.get(key), int) or info[key] < 1:
            raise InputError(
                info_path, f"expected a positive integer {key!r}, got {info.get(key)!r}"
            )
    if info["in_dim"] != hidden_size:
        raise InputError(
            info_path,
            f"in_dim {info['in_dim']} does not match the encoder's hidden size {hidden_size}",
        )
    return info
