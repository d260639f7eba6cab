"""Sentence-pair classification (MNLI, ANLI, QQP, XNLI): a classifier on the first token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.evaluation.metrics import accuracy
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.readers import PairExample, TaskData
from xretrieve.trainer.tasks.base import (
    Batch,
    ClassificationHead,
    Feature,
    RunContext,
    Task,
    TextSettings,
    encode,
    text_batch,
    tokenize,
)


class PairClassificationTask(Task):
    main_metric = "accuracy"

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        self.labels = train.labels
        self.head = ClassificationHead(text.hidden_size, len(self.labels), text.dropout)
        self.train_features = self._featurise(train.examples)
        if validation is not None:
            self.set_validation(validation, config.validation)

    def _featurise(self, examples: Sequence[PairExample]) -> list[Feature]:
        if not examples:
            return []
        single = examples[0].text_b is None
        features = tokenize(
            self.text,
            [example.text_a for example in examples],
            None if single else [example.text_b or "" for example in examples],
            self.max_length,
        )
        for feature, example in zip(features, examples, strict=True):
            # -1: no label (a file read for prediction); never compared with a prediction
            feature["label"] = -1 if example.label is None else example.label
        return features

    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        batch = text_batch(features, self.text)
        batch["labels"] = torch.tensor([feature["label"] for feature in features])
        return batch

    def logits(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return self.head(encode(encoder, batch))

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(encoder, batch).float(), batch["labels"])

    def predicted_ids(self, encoder: nn.Module, run: RunContext) -> np.ndarray:
        """``(n,)`` int64: the arg-max label id of every validation example."""
        predictions = []
        for _, batch in self.eval_batches(run):
            with run.autocast():
                logits = self.logits(encoder, batch)
            predictions.append(logits.argmax(-1).cpu().numpy())
        return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)

    def predict(self, encoder: nn.Module, run: RunContext) -> list[str]:
        """The predicted label name of every validation example, in order."""
        return [self.labels[int(i)] for i in self.predicted_ids(encoder, run)]

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        gold = [feature["label"] for feature in self.eval_features]
        return {"accuracy": accuracy(gold, self.predicted_ids(encoder, run))}

    def head_info(self) -> dict[str, Any]:
        return {**super().head_info(), "labels": list(self.labels), "pooling": "first_token"}
