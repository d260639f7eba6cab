"""Prediction with an already fine-tuned checkpoint, without training: the checkpoint's encoder
and the head of one of its tasks (``heads.safetensors``, described by ``heads.json`` and the run's
``train_config.json``), applied to examples read by the same readers as training.

``Predictor(checkpoint, task).predict(data)`` returns what the task's validation scores:

- pair classification: the label name of each example;
- tagging: the tag of every word of each sentence;
- extractive QA: ``{question id: answer text}`` ("" = no answer).

Validation during training predicts through the same task methods, so a checkpoint's
predictions here are those its validation scored."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.readers import read_json_object
from xretrieve.trainer.checkpoint import CONFIG_FILE, HEADS_INFO, load_heads
from xretrieve.trainer.config import Precision, TaskConfig, TaskType, task_config_from_json
from xretrieve.trainer.readers import TaskData

logger = logging.getLogger(__name__)

PREDICTABLE = (TaskType.PAIR_CLASSIFICATION, TaskType.TAGGING, TaskType.EXTRACTIVE_QA)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(path, "not found: a fine-tuned checkpoint of xretrieve's trainer has it")
    return read_json_object(path)


def checkpoint_tasks(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(train_config.json, heads.json)`` of a fine-tuned checkpoint."""
    checkpoint = Path(checkpoint)
    return _read_json(checkpoint / CONFIG_FILE), _read_json(checkpoint / HEADS_INFO)


def saved_task(checkpoint: Path, name: str | None) -> tuple[TaskConfig, int, dict[str, Any]]:
    """The ``TaskConfig`` of task ``name`` in ``checkpoint`` (None: its only task), the run's
    top-level ``max_length`` and the head's description from ``heads.json``."""
    config, heads = checkpoint_tasks(checkpoint)
    entries = config.get("tasks") if isinstance(config, dict) else None
    source = Path(checkpoint) / CONFIG_FILE
    if not isinstance(entries, list) or not entries:
        raise InputError(source, "holds no tasks")
    names = [entry.get("name") for entry in entries if isinstance(entry, dict)]
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise InputError(
            source,
            f"has no task {name!r}; its tasks are {', '.join(map(str, names))} (choose one)",
        )
    entry = entries[names.index(name)]
    head = (heads.get("tasks") or {}).get(name) if isinstance(heads, dict) else None
    if not isinstance(head, dict):
        raise InputError(Path(checkpoint) / HEADS_INFO, f"describes no head of task {name!r}")
    return task_config_from_json(entry, source), int(config.get("max_length", 128)), head


class Predictor:
    """A fine-tuned checkpoint's encoder and the head of one task, on ``device`` ("auto",
    "cpu", "cuda", "cuda:N"), predicting in batches of ``batch_size`` under the precision
    ``precision`` (AUTO: bf16 or fp16 on a GPU, fp32 on the CPU)."""

    def __init__(
        self,
        checkpoint: Path,
        task: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 64,
        precision: Precision = Precision.AUTO,
    ) -> None:
        import torch

        from xretrieve.trainer.loop import (
            autocast_for,
            load_encoder_and_tokenizer,
            resolve_precision,
            text_settings,
            torch_device,
        )
        from xretrieve.trainer.tasks import TASK_CLASSES, RunContext

        self.checkpoint = Path(checkpoint)
        config, max_length, head = saved_task(self.checkpoint, task)
        if config.type not in PREDICTABLE:
            raise InputError(
                self.checkpoint,
                f"task {config.name!r} is a {config.type.value} task; prediction covers "
                f"{', '.join(kind.value for kind in PREDICTABLE)}",
            )
        if config.type is TaskType.EXTRACTIVE_QA:
            from dataclasses import replace

            config = replace(config, allow_unanswerable=bool(head.get("allow_unanswerable")))
        self.config = config
        self.labels = tuple(head.get("labels") or ())
        self.device = torch_device(device)
        encoder, tokenizer = load_encoder_and_tokenizer(self.checkpoint)
        text = text_settings(encoder, tokenizer, max_length)
        empty = TaskData((), labels=self.labels)
        self.task = TASK_CLASSES[config.type](config, text, empty, None)  # type: ignore[call-arg]
        load_heads(self.checkpoint, [self.task])
        self.encoder = encoder.to(self.device).eval()
        self.task.to(self.device)
        self.task.head.eval()
        precision = resolve_precision(precision, self.device)
        self.run = RunContext(self.device, batch_size, lambda: autocast_for(precision))
        self._no_grad = torch.no_grad

    @property
    def name(self) -> str:
        return self.config.name

    def predict(self, data: TaskData, path: Path | None = None) -> Any:
        """The task's predictions for ``data`` (examples read from ``path``, named in errors);
        see the module docstring for their form."""
        self.task.set_validation(data, path)
        with self._no_grad():
            return self.task.predict(self.encoder, self.run)  # type: ignore[attr-defined]

    def evaluate(self, data: TaskData, path: Path | None = None, language: str | None = None):
        """The task's validation metrics on labelled ``data`` (``language``: the one whose
        answers MLQA's normalisation uses)."""
        self.task.set_validation(data, path)
        if hasattr(self.task, "eval_language"):
            self.task.eval_language = language or self.config.language
        with self._no_grad():
            return self.task.evaluate(self.encoder, self.run)
