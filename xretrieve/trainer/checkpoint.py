"""Checkpoints: ``OUT/checkpoint-STEP/`` holds

- the encoder as a standard Hugging Face checkpoint (config.json, model.safetensors, tokenizer
  files), so ``xretrieve export`` and ``AutoModel.from_pretrained`` take the folder as is;
- ``heads.safetensors`` (every task head, tensors named ``TASK.PARAM``) and ``heads.json``;
- for an image-text task, ``projection.safetensors`` (``weight`` (out, in), ``bias`` (out,)) and
  ``projection.json`` {in_dim, out_dim, pooling, normalize, task} for the export side;
- ``xretrieve.json`` ``{"text_prefix": ...}``: the base model's text prefix, which export reads;
- ``trainer_state.pt`` (optimizer, scheduler, grad scaler, step, RNG states, sampler position,
  keep-best bookkeeping) and ``train_config.json``.

Each checkpoint is written into a temporary folder that is renamed into place when complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporters.checkpoint import PROJECTION_INFO
from exporters.checkpoint import PROJECTION_WEIGHTS as PROJECTION_FILE
from xretrieve.errors import InputError
from xretrieve.files import atomic_directory

HEADS_FILE = "heads.safetensors"
HEADS_INFO = "heads.json"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint in ``output_dir``, oldest first."""
    found = []
    if Path(output_dir).is_dir():
        for child in Path(output_dir).iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and (child / "config.json").is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_resumable(output_dir: Path) -> Path | None:
    """The newest checkpoint in ``output_dir`` that has a trainer state, or None."""
    for _, path in reversed(list_checkpoints(output_dir)):
        if (path / STATE_FILE).is_file():
            return path
    return None


def save_checkpoint(
    path: Path,
    encoder: Any,
    tokenizer: Any,
    tasks: Sequence[Any],
    trainer_state: dict[str, Any] | None,
    config_json: str,
    text_prefix: str = "",
) -> Path:
    """Write a complete checkpoint to ``path`` atomically (an existing one is replaced).
    ``text_prefix`` (the base model's, e.g. "query: ") goes into ``xretrieve.json``, so that
    exporting the checkpoint prefixes texts as its base did."""
    import torch
    from safetensors.torch import save_file

    from xretrieve.encoding.model_settings import ModelSettings, write_model_settings

    with atomic_directory(path) as tmp:
        encoder.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # The base's calibrated threshold is not carried: training changes the scores.
        write_model_settings(tmp, ModelSettings(text_prefix=text_prefix))
        tensors: dict[str, torch.Tensor] = {}
        info: dict[str, Any] = {"format_version": 1, "tasks": {}}
        for task in tasks:
            for name, tensor in task.head.state_dict().items():
                tensors[f"{task.name}.{name}"] = tensor.detach().to("cpu").contiguous()
            info["tasks"][task.name] = {**task.head_info(), "main_metric": task.main_metric}
        save_file(tensors, str(tmp / HEADS_FILE), metadata={"format": "pt"})
        (tmp / HEADS_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
        projection_tasks = [task for task in tasks if task.config.type.value == "image_text"]
        if projection_tasks:
            task = projection_tasks[0]
            layer = task.head.projection
            save_file(
                {
                    "weight": layer.weight.detach().to("cpu").contiguous(),
                    "bias": layer.bias.detach().to("cpu").contiguous(),
                },
                str(tmp / PROJECTION_FILE),
                metadata={"format": "pt"},
            )
            projection = {
                "in_dim": layer.in_features,
                "out_dim": layer.out_features,
                "pooling": "mean",
                "layer": -1,
                "normalize": True,
                "task": task.name,
            }
            (tmp / PROJECTION_INFO).write_text(json.dumps(projection, indent=2), encoding="utf-8")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(config_json, encoding="utf-8")
    return path


def load_heads(path: Path, tasks: Sequence[Any]) -> None:
    """Load every task head from ``path/heads.safetensors``; names and shapes must match."""
    from safetensors.torch import load_file

    file = Path(path) / HEADS_FILE
    if not file.is_file():
        raise InputError(file, "checkpoint has no task heads")
    tensors = load_file(str(file))
    for task in tasks:
        prefix = f"{task.name}."
        state = {
            key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)
        }
        try:
            task.head.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise InputError(file, f"head of task '{task.name}' does not match: {error}") from None


def load_trainer_state(path: Path) -> dict[str, Any]:
    import torch

    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise InputError(file, "not a resumable checkpoint (no trainer state)")
    return torch.load(file, map_location="cpu", weights_only=True)


def prune_checkpoints(output_dir: Path, keep_last: int, keep: Sequence[Path]) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and those in ``keep``; returns the
    deleted folders."""
    import shutil

    checkpoints = list_checkpoints(output_dir)
    protected = {Path(p).resolve() for p in keep}
    protected.update(path.resolve() for _, path in checkpoints[-keep_last:])
    deleted = []
    for _, path in checkpoints:
        if path.resolve() not in protected:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
    return deleted
