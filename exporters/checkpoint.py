"""Checks on a Hugging Face checkpoint directory that need no model code: it exists, it has a
config of a built-in architecture, no remote code, and safetensors weights."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xretrieve.errors import InputError

# model_type -> attribute path of the ``nn.ModuleList`` of transformer layers. Only architectures
# whose forward takes (input_ids, attention_mask) and records hidden_states per layer belong here.
LAYER_LISTS: dict[str, tuple[str, ...]] = {
    "xlm-roberta": ("encoder", "layer"),
    "roberta": ("encoder", "layer"),
    "bert": ("encoder", "layer"),
    "distilbert": ("transformer", "layer"),
}
SUPPORTED_MODEL_TYPES = tuple(LAYER_LISTS)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise InputError(path, "expected a JSON object")
    return payload


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
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise InputError(checkpoint_dir, "no config.json: not a Hugging Face checkpoint directory")
    config = _read_json(config_path)
    _refuse_remote_code(config_path, config)
    tokenizer_config_path = checkpoint_dir / "tokenizer_config.json"
    if tokenizer_config_path.is_file():
        _refuse_remote_code(tokenizer_config_path, _read_json(tokenizer_config_path))
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
    """Raise ``InputError`` unless the weights are in safetensors files; pickle-only weights
    (pytorch_model.bin) are refused, never loaded, because unpickling can run code."""
    checkpoint_dir = Path(checkpoint_dir)
    if (checkpoint_dir / "model.safetensors").is_file() or (
        checkpoint_dir / "model.safetensors.index.json"
    ).is_file():
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


def check_tokenizer(checkpoint_dir: Path) -> None:
    """Raise ``InputError`` unless the checkpoint has tokenizer files an export can carry."""
    checkpoint_dir = Path(checkpoint_dir)
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
    info = _read_json(info_path)
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
