"""Checkpoints: ``OUT/checkpoint-STEP/`` holds

- the encoder as a standard Hugging Face checkpoint (config.json, model.safetensors, tokenizer
  files), so ``xretrieve export`` and ``AutoModel.from_pretrained`` take the folder as is;
- ``heads.safetensors`` (every task head, tensors named ``TASK.PARAM``) and ``heads.json``;
- for an image-text task, ``projection.safetensors`` (``weight`` (out, in), ``bias`` (out,)) and
  ``projection.json`` {in_dim, out_dim, pooling, normalize, task} for the export side;
- ``xretrieve.json`` ``{"text_prefix": ...}``: the base model's text prefix, which export reads;
- ``trainer_state.pt`` (optimizer, scheduler, grad scaler, step, RNG states, sampler position,
  keep-best bookkeeping, the run's config hash) and ``train_config.json``;
- ``.xretrieve.sha256`` (``integrity.DIRECTORY_RECORD``): the size and sha256 of every other
  file, written last; resuming verifies it, so a damaged checkpoint is refused, not trained on.

A run's identity is the hash of its resolved config without ``output_dir``
(``config_fingerprint``): resuming checks it, so ``--resume`` never continues a different run.

Each checkpoint is written into a temporary folder that is renamed into place when complete.

The output folder of a run (``TRAINING_RUN_OUTPUT``) is new, empty, or an earlier run's: the
trainer recognises what it wrote (``run_artifacts``) and ``--overwrite`` removes only that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporters.checkpoint import PROJECTION_INFO
from exporters.checkpoint import PROJECTION_WEIGHTS as PROJECTION_FILE
from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_directory
from xretrieve.core.integrity import DIRECTORY_RECORD, verify_record, write_directory_record
from xretrieve.core.outputs import OutputOwner
from xretrieve.core.readers import read_json_object

logger = logging.getLogger(__name__)

HEADS_FILE = "heads.safetensors"
HEADS_INFO = "heads.json"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a run writes into its output folder besides the checkpoints (see loop.py).
RUN_FILES = ("metrics.jsonl", "train_summary.json")
# Keys that do not change what a run computes: the folder it writes to.
_NOT_IN_FINGERPRINT = ("output_dir",)
# Task settings added after checkpoints were first written, at the value that computes what
# older versions computed: left out of the fingerprint, so those checkpoints still resume.
_LATER_TASK_DEFAULTS = {"answer_normalization": "squad"}


@contextlib.contextmanager
def transformers_bars_off() -> Any:
    """transformers draws tqdm bars while loading and saving weights; the library never prints."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def config_fingerprint(config_json: Mapping[str, Any]) -> str:
    """sha256 (hex) of a run's resolved config (``TrainConfig.to_json()``) without
    ``output_dir``, canonical JSON with sorted keys."""
    kept = {k: v for k, v in config_json.items() if k not in _NOT_IN_FINGERPRINT}
    if isinstance(kept.get("tasks"), list):
        kept["tasks"] = [_without_later_defaults(task) for task in kept["tasks"]]
    text = json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _without_later_defaults(task: Any) -> Any:
    if not isinstance(task, Mapping):
        return task
    return {
        key: value
        for key, value in task.items()
        if key not in _LATER_TASK_DEFAULTS or value != _LATER_TASK_DEFAULTS[key]
    }


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config JSON values (``tasks[1].train_files``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new))
        found: list[str] = []
        for key in keys:
            if prefix == "" and key in _NOT_IN_FINGERPRINT:
                continue
            found += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found += config_differences(a, b, f"{prefix.rstrip('.')}[{i}].")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def check_same_run(
    checkpoint: Path, state: Mapping[str, Any], config_json: Mapping[str, Any]
) -> None:
    """Refuse to resume ``checkpoint`` with a config other than the one that wrote it. The hash
    stored in its trainer state is compared (older checkpoints: the hash of their
    ``train_config.json``); the error lists the keys that differ."""
    stored = state.get("config_hash")
    saved_json: Any = None
    config_file = Path(checkpoint) / CONFIG_FILE
    if config_file.is_file():
        try:
            saved_json = read_json_object(config_file)
        except InputError:  # unreadable: compared by the trainer state's hash alone
            saved_json = None
    if stored is None and isinstance(saved_json, Mapping):
        stored = config_fingerprint(saved_json)
    if stored is None:
        raise InputError(checkpoint, "checkpoint records no config; cannot tell whose run it is")
    if stored == config_fingerprint(config_json):
        return
    differing = config_differences(saved_json, config_json) if saved_json is not None else []
    shown = ", ".join(differing[:8]) + (", ..." if len(differing) > 8 else "")
    raise InputError(
        checkpoint,
        "was written by a different run (config differs"
        + (f" in: {shown}" if shown else "")
        + "); resume with the config that wrote it, or start a new run from it with "
        "base = this checkpoint",
    )


def run_artifacts(output_dir: Path) -> list[Path]:
    """What a run (this trainer) has written into ``output_dir``: checkpoints (also the
    temporary folders of an interrupted save), metrics.jsonl and train_summary.json."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for child in sorted(output_dir.iterdir()):
        name = child.name
        if (
            name in RUN_FILES
            or _CHECKPOINT.match(name)
            or (name.startswith(".checkpoint-") and child.is_dir())
        ):
            found.append(child)
    return found


def _foreign_artifacts(artifacts: Sequence[Path]) -> list[str]:
    """Names of ``run_artifacts`` the trainer did not write: a ``checkpoint-N`` without
    ``train_config.json`` (a checkpoint copied in by hand), a folder named like a run file."""
    foreign = []
    for path in artifacts:
        if path.name in RUN_FILES:
            own = path.is_file()
        elif _CHECKPOINT.match(path.name):
            own = path.is_dir() and (path / CONFIG_FILE).is_file()
        else:  # the temporary folder of an interrupted save
            own = path.is_dir()
        if not own:
            foreign.append(path.name)
    return foreign


def training_run_disowns(output_dir: Path) -> str | None:
    """None when the non-empty ``output_dir`` holds an earlier run of the trainer (a checkpoint,
    metrics.jsonl or train_summary.json, see ``run_artifacts``), every one of them written by
    the trainer; else why not. Other files may sit beside them: the trainer never replaces the
    folder as a whole, and ``--overwrite`` removes only ``run_artifacts``. The ``OutputOwner``
    of ``train``'s ``output_dir``."""
    artifacts = run_artifacts(output_dir)
    if not artifacts:
        return f"no checkpoint-N, {' or '.join(RUN_FILES)} of a training run"
    foreign = _foreign_artifacts(artifacts)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        return f"{shown}: not written by the trainer (a checkpoint it writes holds {CONFIG_FILE})"
    return None


TRAINING_RUN_OUTPUT = OutputOwner("train", training_run_disowns)


def remove_run(output_dir: Path) -> None:
    """Delete a previous run's artifacts (``run_artifacts``) for ``--overwrite``; other files
    in the folder are left alone."""
    for path in run_artifacts(output_dir):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


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

    from exporters.model_settings import ModelSettings, write_model_settings

    with atomic_directory(path) as tmp:
        with transformers_bars_off():
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
        write_directory_record(tmp)  # last: it covers every file above
    return path


def verify_checkpoint(path: Path) -> None:
    """Refuse to resume from a checkpoint whose files differ from what was saved (the record
    ``save_checkpoint`` writes: a file missing, truncated, or changed at the same size). A
    checkpoint saved before records were written is taken as it is (logged)."""
    record = Path(path) / DIRECTORY_RECORD
    if not record.exists():
        logger.warning(
            "%s has no integrity record (saved by an older xretrieve): not verified", path
        )
        return
    problem = verify_record(record)
    if problem is not None:
        raise InputError(
            path,
            f"damaged checkpoint: {problem}; resume from another checkpoint folder or start "
            "over ({overwrite=True})",
            arguments=("overwrite",),
        )


def load_heads(path: Path, tasks: Sequence[Any]) -> None:
    """Load every task head from ``path/heads.safetensors``; names and shapes must match."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / HEADS_FILE
    if not file.is_file():
        raise InputError(file, "checkpoint has no task heads")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(file, f"cannot read the task heads (damaged?): {error}") from None
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
    """The trainer state of checkpoint ``path``; ``InputError`` naming the file when it is
    missing or cannot be read."""
    import pickle

    import torch

    file = Path(path) / STATE_FILE
    if not file.is_file():
        raise InputError(file, "not a resumable checkpoint (no trainer state)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputError(
            file, f"cannot read the trainer state (damaged?): {type(error).__name__} {first_line}"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise InputError(file, "not a trainer state (no step)")
    return state


def prune_checkpoints(output_dir: Path, keep_last: int, keep: Sequence[Path]) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and those in ``keep``; returns the
    deleted folders."""
    checkpoints = list_checkpoints(output_dir)
    protected = {Path(p).resolve() for p in keep}
    protected.update(path.resolve() for _, path in checkpoints[-keep_last:])
    deleted = []
    for _, path in checkpoints:
        if path.resolve() not in protected:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
    return deleted
