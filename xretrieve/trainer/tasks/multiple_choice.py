"""Multiple choice (HellaSwag, CosmosQA, CommonsenseQA): each (context, question + choice) pair is
scored by a one-output head on the first token; a softmax over the choices gives the loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.evaluation.metrics import accuracy
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.readers import ChoiceExample, TaskData
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


class MultipleChoiceTask(Task):
    main_metric = "accuracy"

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        self.head = ClassificationHead(text.hidden_size, 1, text.dropout)
        self.train_features = self._featurise(train.examples)
        if validation is not None:
            self.set_validation(validation, config.validation)

    def _featurise(self, examples: Sequence[ChoiceExample]) -> list[Feature]:
        firsts, seconds = [], []
        for example in examples:
            for choice in example.choices:
                firsts.append(example.context or example.question)
                second = f"{example.question} {choice}" if example.context else choice
                seconds.append(second.strip())
        flat = tokenize(self.text, firsts, seconds, self.max_length)
        features, start = [], 0
        for example in examples:
            n = len(example.choices)
            features.append({"choices": flat[start : start + n], "label": example.label})
            start += n
        return features

    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        """Choices of all examples flattened to ``(batch * max_choices, seq)``; examples with fewer
        choices are padded with copies of their first choice, masked out in the softmax."""
        width = max(len(feature["choices"]) for feature in features)
        flat, mask = [], torch.zeros(len(features), width, dtype=torch.bool)
        for i, feature in enumerate(features):
            choices = feature["choices"]
            flat.extend(choices + [choices[0]] * (width - len(choices)))
            mask[i, : len(choices)] = True
        batch = text_batch(flat, self.text)
        batch["choice_mask"] = mask
        batch["labels"] = torch.tensor([feature["label"] for feature in features])
        return batch

    def scores(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        """``(batch, max_choices)`` float32 choice scores, -inf for padding choices."""
        n, width = batch["choice_mask"].shape
        scores = self.head(encode(encoder, batch)).float().view(n, width)
        return scores.masked_fill(~batch["choice_mask"], float("-inf"))

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.scores(encoder, batch), batch["labels"])

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        predictions, labels = [], []
        for _, batch in self.eval_batches(run):
            with run.autocast():
                scores = self.scores(encoder, batch)
            predictions.append(scores.argmax(-1).cpu().numpy())
            labels.append(batch["labels"].cpu().numpy())
        return {"accuracy": accuracy(np.concatenate(labels), np.concatenate(predictions))}

    def feature_length(self, feature: Feature) -> int:
        return sum(len(choice["input_ids"]) for choice in feature["choices"])

    def head_info(self) -> dict[str, Any]:
        return {**super().head_info(), "pooling": "first_token"}
