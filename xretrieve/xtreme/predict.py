"""``xtreme predict``: predictions and scores of one target task from a checkpoint that is already
fine-tuned on it (a unit's ``model/`` of ``xtreme run``, or a ``xretrieve train`` checkpoint whose
task has the XTREME task's name or is its only task), without training; a retrieval task
(BUCC, Tatoeba) embeds with the default retrieval recipe. The files are those ``xtreme run``
writes for a unit, by the same functions: ``predictions/{dev,test}/TASK/test-LANG.*``, the gold
of the labelled splits in ``labels/``, and ``predict.json`` with the scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.interrupts import sigterm_as_interrupt
from xretrieve.core.outputs import check_output_path
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Device, parse_device
from xretrieve.xtreme.outputs import (
    LABELS_DIR,
    PREDICT_FILE,
    PREDICT_FORMAT,
    PREDICT_OUTPUT,
    PREDICTIONS_DIR,
    write_json,
)
from xretrieve.xtreme.recipes import DEFAULT_PRESET, PRESETS, RetrievalRecipe
from xretrieve.xtreme.targets import XTREME_TARGETS, TargetKind
from xretrieve.xtreme.units import SCORED_SPLITS, SplitScores, locate_task_files, score_predictions


@dataclass(frozen=True)
class PredictSummary:
    """Where the files went and each split's scores (None: no labelled file in the split)."""

    out_dir: Path
    task: str
    scores: dict[str, SplitScores | None]
    examples: int


def predict_xtreme(
    checkpoint: Path,
    task: str,
    data_dir: Path,
    out_dir: Path,
    *,
    device: Device | str = Device.AUTO,
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
) -> PredictSummary:
    """Predict and score every dev and test file of XTREME task ``task`` under ``data_dir``
    with the fine-tuned ``checkpoint``; see the module docstring. ``InputError`` before any
    work for a bad output folder, checkpoint, task or data."""
    progress = progress or no_progress
    if task not in XTREME_TARGETS:
        raise InputError(None, f"unknown XTREME task {task!r} (known: {', '.join(XTREME_TARGETS)})")
    target = XTREME_TARGETS[task]
    device = parse_device(device)
    checkpoint, data_dir, out_dir = Path(checkpoint), Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise InputError(data_dir, "data_dir: not a directory (XTREME's download folder)")
    check_output_path(
        out_dir,
        directory=True,
        option="out_dir",
        inputs=[checkpoint, data_dir],
        owner=PREDICT_OUTPUT,
    )
    files = locate_task_files(data_dir, target)
    assert target.xtreme is not None
    with sigterm_as_interrupt():
        if target.kind is TargetKind.FINE_TUNED:
            from xretrieve.trainer.predict import saved_task
            from xretrieve.xtreme.finetune import (
                checkpoint_task_name,
                predict_files,
                write_finetuned_gold,
            )

            saved_task(checkpoint, checkpoint_task_name(checkpoint, task))  # a head to predict with
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / PREDICT_FILE, _manifest(checkpoint, task, None))
            write_finetuned_gold(target.xtreme, files, out_dir / LABELS_DIR)
            examples = predict_files(
                checkpoint,
                target.xtreme,
                files,
                out_dir / PREDICTIONS_DIR,
                device=device.value,
                batch_size=batch_size,
                progress=progress,
            )
            details: dict[str, Any] = {}
        else:
            from xretrieve.xtreme.retrieval import predict_retrieval, write_retrieval_gold

            recipe = PRESETS[DEFAULT_PRESET][task]
            assert isinstance(recipe, RetrievalRecipe)
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json(out_dir / PREDICT_FILE, _manifest(checkpoint, task, None))
            write_retrieval_gold(target.xtreme, files, out_dir / LABELS_DIR)
            protocol, details = predict_retrieval(
                checkpoint,
                target.xtreme,
                files,
                recipe,
                out_dir / PREDICTIONS_DIR,
                device=device,
                progress=progress,
            )
            details = {"protocol": protocol.to_json(), "languages": details}
            examples = 0
        scores = {
            split.value: score_predictions(
                target, out_dir / PREDICTIONS_DIR, out_dir / LABELS_DIR, split
            )
            for split in SCORED_SPLITS
        }
        manifest = _manifest(checkpoint, task, scores)
        manifest.update(details)
        write_json(out_dir / PREDICT_FILE, manifest)
    return PredictSummary(out_dir, task, scores, examples)


def _manifest(
    checkpoint: Path, task: str, scores: dict[str, SplitScores | None] | None
) -> dict[str, Any]:
    return {
        "format": PREDICT_FORMAT,
        "checkpoint": str(checkpoint),
        "task": task,
        "scores": None
        if scores is None
        else {split: None if s is None else s.to_json() for split, s in scores.items()},
    }
