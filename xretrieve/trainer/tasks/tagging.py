"""Token tagging (CCG supertags, POS, NER): a linear layer over each word's first sub-token; the
other sub-tokens and special tokens are ignored by the loss.

A sentence longer than ``max_length`` sub-tokens is cut into consecutive windows (the tokenizer's
overflow, no overlap), so every word is trained on and predicted, as XTREME's preprocessing
splits long sentences; a word cut between two windows is tagged in the window of its first
sub-token. Validation scores the predicted tags of whole sentences: seqeval's chunk F1 (XTREME's
metric for PAN-X and UD-POS, the main metric) and word accuracy; CCG supertagging (preset
``ccg``) is scored by word accuracy only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.evaluation.metrics import accuracy, span_f1
from xretrieve.trainer.config import TaskConfig
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
# Presets whose tags are no chunks: scored by word accuracy (jiant's CCG metric).
WORD_ACCURACY_PRESETS = frozenset({"ccg"})


class TaggingTask(Task):
    eval_state = ("eval_features", "eval_examples")

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        self.labels = train.labels
        self.chunked = config.preset not in WORD_ACCURACY_PRESETS
        self.main_metric = "f1" if self.chunked else "accuracy"
        self.head = nn.Sequential(
            nn.Dropout(text.dropout), nn.Linear(text.hidden_size, len(self.labels))
        )
        self.train_features = self._featurise(train.examples)
        self.eval_examples: tuple[TagExample, ...] = ()
        if validation is not None:
            self.set_validation(validation, config.validation)

    def set_validation(self, data: TaskData, path: Any) -> None:
        self.eval_examples = data.examples
        self.eval_features = self._featurise(data.examples)

    def _featurise(self, examples: Sequence[TagExample]) -> list[Feature]:
        """One feature per window: ``input_ids``, ``tags`` (the tag id at each word's first
        sub-token, IGNORE elsewhere; IGNORE everywhere without labels), ``example`` and
        ``words`` ((position, word index) of each word tagged in this window)."""
        if not examples:
            return []
        encoded = self.text.tokenizer(
            [list(example.words) for example in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=True,
            stride=0,
            return_token_type_ids=self.text.use_token_types,
            return_attention_mask=False,
        )
        index = {label: i for i, label in enumerate(self.labels)}
        # Tags first seen in validation (labels inferred from the training file) get an id the
        # head never predicts; the loss ignores them.
        unseen = len(self.labels)
        tagged: dict[int, set[int]] = {}
        features = []
        for i, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
            example = examples[example_index]
            done = tagged.setdefault(example_index, set())
            tag_ids = [IGNORE] * len(encoded["input_ids"][i])
            words = []
            for position, word in enumerate(encoded.word_ids(i)):
                if word is None or word in done:
                    continue
                done.add(word)
                words.append((position, word))
                if example.tags is not None:
                    tag_ids[position] = index.get(example.tags[word], unseen)
            feature = {
                "input_ids": encoded["input_ids"][i],
                "tags": tag_ids,
                "example": int(example_index),
                "words": words,
            }
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

    @property
    def fill_tag(self) -> str:
        """The tag of a word no window tagged (one that the tokenizer turned into no token):
        ``O`` where the tag set has it, else its first tag."""
        return "O" if "O" in self.labels else self.labels[0]

    def predict(self, encoder: nn.Module, run: RunContext) -> list[list[str]]:
        """The predicted tag of every word of every validation sentence, in order."""
        predicted: list[list[str | None]] = [[None] * len(e.words) for e in self.eval_examples]
        for chunk, batch in self.eval_batches(run):
            with run.autocast():
                best = self.logits(encoder, batch).argmax(-1).cpu().numpy()
            for row, feature in enumerate(chunk):
                sentence = predicted[feature["example"]]
                for position, word in feature["words"]:
                    sentence[word] = self.labels[int(best[row, position])]
        fill = self.fill_tag
        return [[fill if tag is None else tag for tag in sentence] for sentence in predicted]

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        predicted = self.predict(encoder, run)
        gold = [list(example.tags or ()) for example in self.eval_examples]
        words = accuracy(
            [tag for sentence in gold for tag in sentence],
            [tag for sentence in predicted for tag in sentence],
        )
        if not self.chunked:
            return {"accuracy": words}
        return {**span_f1(gold, predicted).as_dict(), "accuracy": words}

    def head_info(self) -> dict[str, Any]:
        return {**super().head_info(), "labels": list(self.labels), "label_first_subtoken": True}
