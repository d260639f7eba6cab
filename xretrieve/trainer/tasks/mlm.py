"""Masked language modelling on plain text, so multilingual MLM can run beside the English tasks:
BERT masking (15% of non-special tokens; 80% -> mask token, 10% -> random token, 10% unchanged)
and an LM head (dense + GELU + LayerNorm, decoder tied to the encoder's word embeddings). As in
jiant, the head starts from the base checkpoint's pretrained one when it has one (XLM-R and
RoBERTa ``lm_head``, BERT ``cls.predictions``, DistilBERT ``vocab_*``); a checkpoint saved without
it (a sentence encoder such as E5) gets a fresh head, with a warning: its MLM accuracy starts at
zero and needs many steps to recover."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xretrieve.core.errors import InputError
from xretrieve.core.readers import read_json_object
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.readers import TaskData, TextExample
from xretrieve.trainer.tasks.base import (
    NO_PADDING,
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

logger = logging.getLogger(__name__)

# (dense weight, dense bias, LayerNorm weight, LayerNorm bias, output bias) of each family's
# pretrained LM head; a tuple lists alternative names of one tensor.
LM_HEAD_NAMES: tuple[tuple[str | tuple[str, ...], ...], ...] = (
    (
        "lm_head.dense.weight",
        "lm_head.dense.bias",
        "lm_head.layer_norm.weight",
        "lm_head.layer_norm.bias",
        ("lm_head.bias", "lm_head.decoder.bias"),
    ),
    (
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        ("cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.gamma"),
        ("cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.beta"),
        ("cls.predictions.bias", "cls.predictions.decoder.bias"),
    ),
    (
        "vocab_transform.weight",
        "vocab_transform.bias",
        "vocab_layer_norm.weight",
        "vocab_layer_norm.bias",
        "vocab_projector.bias",
    ),
)


def _safetensors_names(source: Path) -> dict[str, Path]:
    """Tensor name -> file of a checkpoint's safetensors weights (single file or sharded)."""
    from safetensors import safe_open

    index = source / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(
            isinstance(file, str) for file in weight_map.values()
        ):
            raise InputError(index, "'weight_map' must map tensor names to file names")
        return {name: source / file for name, file in weight_map.items()}
    single = source / "model.safetensors"
    if not single.is_file():
        return {}
    with safe_open(str(single), framework="pt") as handle:
        return {name: single for name in handle.keys()}  # noqa: SIM118 - not a dict


def read_pretrained_lm_head(source: Path) -> tuple[torch.Tensor, ...] | None:
    """The five LM-head tensors (see ``LM_HEAD_NAMES``) of the checkpoint folder ``source``, or
    None when its weights have none. Names may carry a model prefix (``roberta.``, ``bert.``)
    only for the encoder, never for the head, in transformers' layouts."""
    from safetensors import safe_open

    files = _safetensors_names(Path(source))
    for family in LM_HEAD_NAMES:
        found = []
        for names in family:
            options = (names,) if isinstance(names, str) else names
            name = next((n for n in options if n in files), None)
            if name is None:
                break
            found.append(name)
        if len(found) == len(family):
            tensors = []
            for name in found:
                with safe_open(str(files[name]), framework="pt") as handle:
                    tensors.append(handle.get_tensor(name))
            return tuple(tensors)
    return None


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
        self.head: MLMHead = MLMHead(text.hidden_size, self.vocab_size, text.layer_norm_eps)
        self.initialised_from = "fresh"
        self._eval_generator = torch.Generator()
        self.train_features = self._featurise(train.examples)
        if validation is not None:
            self.set_validation(validation, config.validation)

    def init_from_checkpoint(self, source: Any) -> None:
        """Copy the base checkpoint's pretrained LM head into the head when it has one."""
        tensors = read_pretrained_lm_head(Path(source))
        if tensors is None:
            logger.warning(
                "task %s: %s has no pretrained LM head (lm_head / cls.predictions); MLM starts "
                "from a fresh head, so its accuracy starts near 0",
                self.name,
                source,
            )
            return
        dense_w, dense_b, norm_w, norm_b, bias = tensors
        head = self.head
        expected = (head.dense.weight.shape, head.layer_norm.weight.shape)
        if (dense_w.shape, norm_w.shape) != expected or bias.shape[0] < self.vocab_size:
            raise InputError(
                Path(source),
                f"the checkpoint's LM head has shapes {tuple(dense_w.shape)}/{tuple(bias.shape)}, "
                f"the encoder needs {tuple(expected[0])} and {self.vocab_size} outputs",
            )
        with torch.no_grad():
            head.dense.weight.copy_(dense_w)
            head.dense.bias.copy_(dense_b)
            head.layer_norm.weight.copy_(norm_w)
            head.layer_norm.bias.copy_(norm_b)
            head.bias.copy_(bias[: self.vocab_size])
        self.initialised_from = "pretrained"
        logger.info("task %s: MLM head from the pretrained LM head of %s", self.name, source)

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
        batch = {
            "input_ids": inputs,
            "attention_mask": attention,
            "labels": labels,
            NO_PADDING: torch.tensor(bool(attention.numpy().all())),
        }
        if self.text.use_token_types:
            batch["token_type_ids"] = torch.zeros_like(inputs)
        return batch

    def logits(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        embeddings = encoder.get_input_embeddings().weight
        return self.head(encode(encoder, batch), embeddings[: self.vocab_size]).float()

    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        logits = self.logits(encoder, batch)
        labels = batch["labels"].flatten()
        # Sum over the masked tokens divided by their count, the count kept on the device: the
        # mean of cross_entropy without asking the host whether anything was masked (a batch
        # with nothing masked gives 0 with the graph intact, not nan).
        total = F.cross_entropy(logits.flatten(0, 1), labels, ignore_index=IGNORE, reduction="sum")
        return total / (labels != IGNORE).sum().clamp(min=1)

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
            "initialised_from": self.initialised_from,
        }
