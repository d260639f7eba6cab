"""Masked language modelling on plain text, so multilingual MLM can run beside the English tasks:
BERT masking (15% of non-special tokens; 80% -> mask token, 10% -> random token, 10% unchanged)
and a fresh head (dense + GELU + LayerNorm, decoder tied to the encoder's word embeddings)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.errors import InputError
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.readers import TaskData, TextExample
from xretrieve.trainer.tasks.base import (
    Batch,
    Feature,
    RunContext,
    Task,
    TextSettings,
    encode,
    pad_ids,
)

IGNORE = -100
EVAL_MASK_SEED = 1234


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``(batch, seq)`` int64 ids; ``special`` (batch, seq) bool marks tokens never
    masked (specials, padding). Returns (masked inputs, labels with -100 where not predicted)."""
    labels = input_ids.clone()
    chosen = torch.bernoulli(torch.full(input_ids.shape, probability), generator=generator).bool()
    chosen &= ~special
    labels[~chosen] = IGNORE
    replace = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & chosen
    randomise = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    randomise &= chosen & ~replace
    inputs = input_ids.clone()
    inputs[replace] = mask_id
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs[randomise] = random_ids[randomise]
    return inputs, labels


class MLMHead(nn.Module):
    """Transform (dense, GELU, LayerNorm) and an output bias; the decoder matrix is the encoder's
    word embedding matrix, passed in at call time so it is never saved twice."""

    def __init__(self, hidden: int, vocab_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(F.gelu(self.dense(hidden_states)))
        return F.linear(x, embeddings, self.bias)


class MLMTask(Task):
    main_metric = "accuracy"

    def __init__(
        self, config: TaskConfig, text: TextSettings, train: TaskData, validation: TaskData | None
    ) -> None:
        super().__init__(config, text)
        tokenizer = text.tokenizer
        if tokenizer.mask_token_id is None:
            raise InputError(config.train, "MLM needs a tokenizer with a mask token")
        self.mask_id = int(tokenizer.mask_token_id)
        self.vocab_size = min(len(tokenizer), text.vocab_size)
        self.head: MLMHead = MLMHead(text.hidden_size, self.vocab_size)
        self._eval_generator = torch.Generator()
        self.train_features = self._featurise(train.examples)
        if validation is not None:
            self.eval_features = self._featurise(validation.examples)

    def _featurise(self, examples: Sequence[TextExample]) -> list[Feature]:
        encoded = self.text.tokenizer(
            [example.text for example in examples],
            truncation=True,
            max_length=self.max_length,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [
            {"input_ids": ids, "special": special}
            for ids, special in zip(
                encoded["input_ids"], encoded["special_tokens_mask"], strict=True
            )
        ]

    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        """Training masks draw from torch's global RNG (saved with checkpoints, so resume is
        exact); evaluation masks from a fixed seed, so every evaluation scores the same tokens."""
        ids = pad_ids([feature["input_ids"] for feature in features], self.text.pad_id)
        special = pad_ids([feature["special"] for feature in features], 1).bool()
        attention = pad_ids([[1] * len(feature["input_ids"]) for feature in features], 0)
        generator = None if train else self._eval_generator
        inputs, labels = mask_tokens(
            ids, special, self.mask_id, self.vocab_size, self.config.mlm_probability, generator
        )
        batch = {"input_ids": inputs, "attention_mask": attention, "labels": labels}
        if self.text.use_token_types:
            batch["token_type_ids"] = torch.zeros_like(inputs)
        return batch

    def logits(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        embeddings = encoder.get_input_embeddings().weight
        return self.head(encode(encoder, batch), embeddings[: self.vocab_size]).float()

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        logits = self.logits(encoder, batch)
        labels = batch["labels"]
        if not (labels != IGNORE).any():
            return logits.sum() * 0.0  # nothing masked in a tiny batch: keep the graph, no signal
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)

    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        self._eval_generator.manual_seed(EVAL_MASK_SEED)
        total_loss, correct, count = 0.0, 0, 0
        for _, batch in self.eval_batches(run):
            with run.autocast():
                logits = self.logits(encoder, batch)
            mask = batch["labels"] != IGNORE
            if not mask.any():
                continue
            total_loss += float(
                F.cross_entropy(logits[mask], batch["labels"][mask], reduction="sum")
            )
            correct += int((logits[mask].argmax(-1) == batch["labels"][mask]).sum())
            count += int(mask.sum())
        if count == 0:
            raise InputError(self.config.validation, "no token was masked in the validation text")
        loss = total_loss / count
        return {
            "accuracy": 100.0 * correct / count,
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
        }

    def head_info(self) -> dict[str, Any]:
        return {
            **super().head_info(),
            "tied_decoder": "encoder input embeddings",
            "vocab_size": self.vocab_size,
        }
