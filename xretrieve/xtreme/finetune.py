"""One fine-tuned target task of phase 3: fine-tune a checkpoint on the task's English training
data with xretrieve's trainer, choose the checkpoint on the English dev set only, keep it as the
unit's target checkpoint, and predict every language's dev and test files with it.

- ``fine_tune``: trains in ``UNIT/train`` (resumable: an interrupted unit continues from the
  trainer's checkpoint), then copies the selected checkpoint without its optimizer state to
  ``UNIT/model`` and removes ``UNIT/train``.
- ``predict_files``: a ``Predictor`` on the target checkpoint writes
  ``PREDICTIONS/{dev,test}/TASK/test-LANG.*`` (``xtreme predict`` calls it too, so both write the
  same files).
- ``write_finetuned_gold``: the gold of every labelled dev and test file in the same layout."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.integrity import write_directory_record
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.evaluation.metrics import AnswerNormalization
from xretrieve.trainer.checkpoint import STATE_FILE
from xretrieve.trainer.config import (
    EvalConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
)
from xretrieve.trainer.loop import METRICS_FILE
from xretrieve.trainer.presets import PRESETS
from xretrieve.trainer.readers import TaskData
from xretrieve.trainer.task_type import TaskType
from xretrieve.xtreme.data import TASK_PRESETS, TaskFile, read_examples
from xretrieve.xtreme.outputs import (
    MODEL_DIR,
    TRAIN_DIR,
    write_answers,
    write_lines,
    write_sentences,
    write_squad_gold,
)
from xretrieve.xtreme.recipes import FineTuneRecipe
from xretrieve.xtreme.tasks import Scoring, XtremeTask
from xretrieve.xtreme.units import SCORED_SPLITS, TaskFiles

logger = logging.getLogger(__name__)

TRAIN_METRICS = "train_metrics.jsonl"

# The validation metric each task type's checkpoints are chosen by (XTREME's metric).
SELECTION_METRIC = {
    TaskType.PAIR_CLASSIFICATION: "accuracy",
    TaskType.TAGGING: "f1",
    TaskType.EXTRACTIVE_QA: "f1",
}


@dataclass(frozen=True)
class FineTuned:
    """What fine-tuning did: optimizer ``steps``, training ``examples``, the checkpoint kept
    (``selected``: its folder name in the trainer's run) and how it was chosen (``metric`` on
    ``selected_on``, ``score``; None: the last checkpoint), ``seconds`` of training."""

    steps: int
    examples: int
    selected: str
    metric: str | None
    selected_on: str | None
    score: float | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_config(
    task: str,
    files: TaskFiles,
    recipe: FineTuneRecipe,
    checkpoint: Path,
    train_dir: Path,
    seed: int,
) -> TrainConfig:
    """The trainer's config of one unit: one task named ``task`` read by its preset, trained on
    the English file, validated (for selection) on the labelled English dev file only."""
    assert files.train is not None
    preset = TASK_PRESETS[task]
    task_type = PRESETS[preset].type
    select = files.select if recipe.select_on_dev else None
    task_config = TaskConfig(
        name=task,
        type=task_type,
        train_files=(files.train.path,),
        validation=None if select is None else select.path,
        preset=preset,
        max_length=recipe.max_length,
        batch_size=recipe.batch_size,
        max_train_examples=recipe.max_train_examples,
        max_eval_examples=recipe.max_eval_examples,
        doc_stride=recipe.doc_stride,
        max_query_length=recipe.max_query_length,
        max_answer_length=recipe.max_answer_length,
        answer_normalization=(
            AnswerNormalization.MLQA if task == "mlqa" else AnswerNormalization.SQUAD
        ),
        language="en",
    )
    optim = OptimConfig(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        grad_accum=recipe.grad_accum,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        warmup_ratio=recipe.warmup_ratio,
        warmup_steps=recipe.warmup_steps,
        max_grad_norm=recipe.max_grad_norm,
        precision=recipe.precision,
    )
    evaluation = EvalConfig(
        eval_every=recipe.eval_every,
        eval_batch_size=recipe.eval_batch_size,
        metric="mean" if select is None else f"{task}/{SELECTION_METRIC[task_type]}",
        keep_best=True,
        keep_last=1,
        patience=None if select is None else recipe.patience,
    )
    return TrainConfig(
        tasks=(task_config,),
        base=checkpoint,
        output_dir=train_dir,
        seed=seed,
        max_length=recipe.max_length,
        optim=optim,
        evaluation=evaluation,
    )


def fine_tune(
    task: str,
    files: TaskFiles,
    recipe: FineTuneRecipe,
    checkpoint: Path,
    unit_dir: Path,
    seed: int,
    *,
    device: str = "auto",
    progress: ProgressCallback = no_progress,
) -> FineTuned:
    """Train (or resume training) in ``unit_dir/train``, keep the selected checkpoint as
    ``unit_dir/model`` (encoder, tokenizer, heads, the run's config; no optimizer state), its
    evaluations as ``unit_dir/train_metrics.jsonl``, and remove the trainer's folder.
    KeyboardInterrupt and ``Terminated`` leave the trainer's resumable checkpoint in
    ``unit_dir/train``."""
    from xretrieve.trainer import train

    config = train_config(task, files, recipe, checkpoint, unit_dir / TRAIN_DIR, seed)
    started = time.perf_counter()
    result = train(config, resume=True, device=device, progress=progress)
    seconds = time.perf_counter() - started
    selected = result.best_checkpoint if config.tasks[0].validation is not None else None
    selected = selected or result.last_checkpoint
    assert selected is not None  # the last step is always saved
    keep_model(selected, unit_dir / MODEL_DIR)
    examples = _train_examples(config)
    history = unit_dir / TRAIN_DIR / METRICS_FILE
    if history.is_file():
        shutil.copy2(history, unit_dir / TRAIN_METRICS)
    shutil.rmtree(unit_dir / TRAIN_DIR, ignore_errors=True)
    validation = config.tasks[0].validation
    return FineTuned(
        steps=result.steps,
        examples=examples,
        selected=selected.name,
        metric=None if validation is None else config.evaluation.metric,
        selected_on=None if validation is None else validation.name,
        score=result.best_score if validation is not None else None,
        seconds=seconds,
    )


def _train_examples(config: TrainConfig) -> int:
    from xretrieve.trainer.readers import read_train_files, task_labels

    task = config.tasks[0]
    return len(read_train_files(task, task_labels(task)).examples)


def keep_model(checkpoint: Path, model_dir: Path) -> None:
    """Copy a trainer checkpoint to ``model_dir`` without its optimizer state (the target
    checkpoint a unit keeps, which ``xtreme predict`` reads), with a new integrity record."""
    from xretrieve.core.files import atomic_directory
    from xretrieve.core.integrity import DIRECTORY_RECORD

    with atomic_directory(model_dir) as staged:
        for item in sorted(Path(checkpoint).iterdir()):
            if item.name in (STATE_FILE, DIRECTORY_RECORD) or not item.is_file():
                continue
            shutil.copy2(item, staged / item.name)
        write_directory_record(staged)


def predict_files(
    model_dir: Path,
    task: XtremeTask,
    files: TaskFiles,
    predictions_root: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    progress: ProgressCallback = no_progress,
) -> int:
    """Predict every dev and test file of ``files`` with the target checkpoint ``model_dir``
    (its task for ``task``: ``checkpoint_task_name``), writing
    ``predictions_root/{dev,test}/TASK/test-LANG.*``; returns the examples predicted."""
    from xretrieve.trainer.predict import Predictor

    predictor = Predictor(
        model_dir, checkpoint_task_name(model_dir, task.name), device=device, batch_size=batch_size
    )
    jobs = [
        (split, lang, f)
        for split in SCORED_SPLITS
        for lang, f in files.splits.get(split, {}).items()
    ]
    predicted = 0
    for done, (split, lang, task_file) in enumerate(jobs):
        progress(f"{task.name} predict", done, len(jobs))
        data = read_examples(task_file, predictor.labels or None)
        output = predictor.predict(data, task_file.path)
        write_prediction(task, task.path(predictions_root / split.value, lang), output)
        predicted += len(data.examples)
    progress(f"{task.name} predict", len(jobs), len(jobs))
    return predicted


def checkpoint_task_name(model_dir: Path, name: str) -> str:
    """The task of the fine-tuned checkpoint that predicts XTREME task ``name``: its task of
    that name, else its only task when that reads the same preset (a ``xretrieve train``
    checkpoint named otherwise); ``InputError`` naming the checkpoint's tasks otherwise."""
    from xretrieve.trainer.checkpoint import CONFIG_FILE
    from xretrieve.trainer.predict import checkpoint_tasks

    config, _ = checkpoint_tasks(model_dir)
    entries = [entry for entry in config.get("tasks", []) if isinstance(entry, dict)]
    names = [entry.get("name") for entry in entries]
    if name in names:
        return name
    if len(entries) == 1 and entries[0].get("preset") == TASK_PRESETS[name]:
        return str(names[0])
    raise InputError(
        Path(model_dir) / CONFIG_FILE,
        f"has no task {name!r} (nor one task with the {TASK_PRESETS[name]!r} preset); its "
        f"tasks: {', '.join(map(str, names)) or 'none'}",
    )


def write_prediction(task: XtremeTask, path: Path, output: Any) -> None:
    """A prediction file of ``task`` from a ``Predictor``'s output."""
    if task.scoring is Scoring.SPAN_F1:
        write_sentences(path, output)
    elif task.scoring in (Scoring.SQUAD, Scoring.MLQA):
        write_answers(path, output)
    else:
        write_lines(path, output)


def write_finetuned_gold(task: XtremeTask, files: TaskFiles, labels_root: Path) -> None:
    """The gold of every labelled dev and test file of a fine-tuned task, read from the data,
    as ``labels_root/{dev,test}/TASK/test-LANG.*``."""
    for split in SCORED_SPLITS:
        for lang, task_file in files.splits.get(split, {}).items():
            if task_file.has_labels:
                _write_gold_file(task, task_file, task.path(labels_root / split.value, lang))


def _write_gold_file(task: XtremeTask, task_file: TaskFile, path: Path) -> None:
    data: TaskData = read_examples(task_file)
    if task.scoring is Scoring.SPAN_F1:
        write_sentences(path, [example.tags for example in data.examples])
    elif task.scoring in (Scoring.SQUAD, Scoring.MLQA):
        write_squad_gold(path, [(e.id, e.question, e.context, e.answers) for e in data.examples])
    else:
        write_lines(path, [data.labels[example.label] for example in data.examples])
