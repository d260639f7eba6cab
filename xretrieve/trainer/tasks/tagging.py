"""Token tagging (CCG supertags, POS, NER): a linear layer over each word's first sub-token; the
other sub-tokens and special tokens are ignored by the loss and the metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.metrics import tagging_accuracy
from xretrieve.trainer.readers import TagExample, TaskData
from xretrieve.trainer.tasks.base import (
    Batch,
    Feature,
    RunContext,
    Task,
    TextSettings,
    encode,
    pad_ids,
    text_batch,
)

IGNORE = -100


class TaggingTask(Task):
    main_metric = "accuracy"

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        self.labels = train.labels
        self.head = nn.Sequential(
            nn.Dropout(text.dropout), nn.Linear(text.hidden_size, len(self.labels))
        )
        self.train_features = self._featurise(train.examples)
        if validation is not None:
            self.set_validation(validation, config.validation)

    def _featurise(self, examples: Sequence[TagExample]) -> list[Feature]:
        encoded = self.text.tokenizer(
            [list(example.words) for example in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=self.text.use_token_types,
            return_attention_mask=False,
        )
        index = {label: i for i, label in enumerate(self.labels)}
        # Tags first seen in validation (labels inferred from the training file) get an id the
        # head never predicts, so they count as errors rather than vanish from the metric.
        unseen = len(self.labels)
        features = []
        for i, example in enumerate(examples):
            tag_ids = [IGNORE] * len(encoded["input_ids"][i])
            previous = None
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word != previous:
                    tag_ids[position] = index.get(example.tags[word], unseen)
                previous = word
            feature = {"input_ids": encoded["input_ids"][i], "tags": tag_ids}
            if self.text.use_token_types:
                feature["token_type_ids"] = encoded["token_type_ids"][i]
            features.append(feature)
        return features

    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        batch = text_batch(features, self.text)
        batch["tags"] = pad_ids([feature["tags"] for feature in features], IGNORE)
        return batch

    def logits(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return self.head(encode(encoder, batch)).float()

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        tags = batch["tags"].masked_fill(batch["tags"] >= len(self.labels), IGNORE)
        logits = self.logits(encoder, batch)
        return F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE)

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        predictions, tags = [], []
        for _, batch in self.eval_batches(run):
            with run.autocast():
                logits = self.logits(encoder, batch)
            mask = batch["tags"] != IGNORE
            predictions.append(logits.argmax(-1)[mask].cpu().numpy())
            tags.append(batch["tags"][mask].cpu().numpy())
        return {"accuracy": tagging_accuracy(np.concatenate(predictions), np.concatenate(tags))}

    def head_info(self) -> dict[str, Any]:
        return {**super().head_info(), "labels": list(self.labels), "label_first_subtoken": True}
