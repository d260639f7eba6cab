"""Extractive question answering (SQuAD v1.1 / v2.0): start and end logits over the context.

Questions are cut to ``max_query_length`` tokens (jiant's default, 64). Long contexts are cut into
overlapping windows with ``doc_stride`` tokens of overlap (the Hugging Face ``run_qa.py``
convention; jiant and the original BERT ``run_squad.py`` call ``doc_stride`` the step from one
window's start to the next, so their 128 is an overlap of ``window context length - 128``); a
window that does not contain the whole answer, and every window of an unanswerable question,
points at the first token (the null answer). At evaluation the best span
over all windows of a question wins unless, with unanswerable questions allowed, the best null
score (start + end logit at the first token) beats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.core.errors import InputError
from xretrieve.evaluation.metrics import QaQuestion, answer_normalizer, qa_scores
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.readers import QAExample, TaskData
from xretrieve.trainer.tasks.base import (
    Batch,
    Feature,
    RunContext,
    Task,
    TextSettings,
    encode,
    text_batch,
)

N_BEST = 20


class ExtractiveQATask(Task):
    main_metric = "f1"
    eval_state = ("eval_features", "eval_examples", "eval_language")

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        self.allow_unanswerable = any(not example.answers for example in train.examples) or bool(
            config.allow_unanswerable
        )
        self.head = nn.Linear(text.hidden_size, 2)
        self.train_features = self._featurise(train.examples, config.train, keep_offsets=False)
        self.eval_examples: tuple[QAExample, ...] = ()
        self.eval_language = config.language
        if validation is not None:
            self.set_validation(validation, config.validation)

    def set_validation(self, data: TaskData, path: Any) -> None:
        self.eval_examples = data.examples
        self.eval_features = self._featurise(data.examples, path, keep_offsets=True)

    def add_language(self, lang: str, data: TaskData, path: Any) -> None:
        self.eval_language = lang
        super().add_language(lang, data, path)

    def _featurise(
        self, examples: Sequence[QAExample], path: Any, keep_offsets: bool
    ) -> list[Feature]:
        if not examples:
            return []
        stride = min(self.config.doc_stride, self.max_length // 2)
        questions = self._cut_questions([example.question.lstrip() for example in examples])
        try:
            encoded = self.text.tokenizer(
                questions,
                [example.context for example in examples],
                truncation="only_second",
                max_length=self.max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                return_token_type_ids=self.text.use_token_types,
                return_attention_mask=False,
            )
        except Exception as error:  # tokenizers raises a plain Exception for too-long questions
            raise InputError(
                path,
                f"cannot window the contexts ({error}); raise max_length or lower doc_stride",
            ) from None
        features = []
        for i, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
            example = examples[example_index]
            sequence_ids = encoded.sequence_ids(i)
            offsets = encoded["offset_mapping"][i]
            context_positions = [p for p, s in enumerate(sequence_ids) if s == 1]
            start_position = end_position = 0
            if example.answers and context_positions:
                text, start_char = example.answers[0]
                end_char = start_char + len(text)
                first, last = context_positions[0], context_positions[-1]
                if offsets[first][0] <= start_char and offsets[last][1] >= end_char:
                    start_position = next(
                        p for p in context_positions if offsets[p][1] > start_char
                    )
                    end_position = next(
                        p for p in reversed(context_positions) if offsets[p][0] < end_char
                    )
            feature = {
                "input_ids": encoded["input_ids"][i],
                "start": start_position,
                "end": end_position,
                "example": int(example_index),
            }
            if keep_offsets:
                feature["offsets"] = [
                    tuple(offset) if sequence_ids[p] == 1 else None
                    for p, offset in enumerate(offsets)
                ]
            if self.text.use_token_types:
                feature["token_type_ids"] = encoded["token_type_ids"][i]
            features.append(feature)
        return features

    def _cut_questions(self, questions: list[str]) -> list[str]:
        """Each question cut after its first ``max_query_length`` tokens (at that token's end)."""
        limit = self.config.max_query_length
        encoded = self.text.tokenizer(
            questions,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        cut = []
        for question, offsets in zip(questions, encoded["offset_mapping"], strict=True):
            cut.append(question[: offsets[limit - 1][1]] if len(offsets) > limit else question)
        return cut

    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        batch = text_batch(features, self.text)
        batch["start"] = torch.tensor([feature["start"] for feature in features])
        batch["end"] = torch.tensor([feature["end"] for feature in features])
        return batch

    def logits(self, encoder: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits ``(batch, seq)`` float32; padding positions are -inf."""
        logits = self.head(encode(encoder, batch)).float()
        padding = batch["attention_mask"] == 0
        start, end = logits.unbind(-1)
        return start.masked_fill(padding, float("-inf")), end.masked_fill(padding, float("-inf"))

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        start, end = self.logits(encoder, batch)
        return (F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])) / 2

    def predict(self, encoder: nn.Module, run: RunContext) -> dict[str, str]:
        """Question id -> predicted answer text ("" = no answer) for every validation question."""
        windows: list[tuple[Feature, np.ndarray, np.ndarray]] = []
        for chunk, batch in self.eval_batches(run):
            with run.autocast():
                start, end = self.logits(encoder, batch)
            start_np, end_np = start.cpu().numpy(), end.cpu().numpy()
            for i, feature in enumerate(chunk):
                n = len(feature["input_ids"])
                windows.append((feature, start_np[i, :n], end_np[i, :n]))
        return predict_answers(
            self.eval_examples, windows, self.config.max_answer_length, self.allow_unanswerable
        )

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        questions = [
            QaQuestion(example.id, tuple(text for text, _ in example.answers))
            for example in self.eval_examples
        ]
        normalize = answer_normalizer(self.config.answer_normalization, self.eval_language)
        result = qa_scores(
            questions, self.predict(encoder, run), normalize, unanswerable=self.allow_unanswerable
        )
        return result.as_dict()

    def head_info(self) -> dict[str, Any]:
        return {
            **super().head_info(),
            "outputs": ["start", "end"],
            "allow_unanswerable": self.allow_unanswerable,
        }


def predict_answers(
    examples: Sequence[QAExample],
    windows: Sequence[tuple[Feature, np.ndarray, np.ndarray]],
    max_answer_length: int,
    allow_unanswerable: bool,
) -> dict[str, str]:
    """Question id -> predicted answer text ("" = no answer) from each window's ``(seq,)`` start
    and end logits; a span must lie in the context, end >= start, and span at most
    ``max_answer_length`` tokens."""
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for feature, start, end in windows:
        index = feature["example"]
        offsets = feature["offsets"]
        null_score = float(start[0] + end[0])
        null[index] = min(null.get(index, np.inf), null_score)
        top_starts = np.argsort(start)[::-1][:N_BEST]
        top_ends = np.argsort(end)[::-1][:N_BEST]
        context = examples[index].context
        for s in top_starts:
            if offsets[s] is None:
                continue
            for e in top_ends:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start[s] + end[e])
                if index not in best or score > best[index][0]:
                    best[index] = (score, context[offsets[s][0] : offsets[e][1]])
    predictions = {}
    for index, example in enumerate(examples):
        span = best.get(index)
        if span is None or (allow_unanswerable and null.get(index, -np.inf) > span[0]):
            predictions[example.id] = ""
        else:
            predictions[example.id] = span[1]
    return predictions
