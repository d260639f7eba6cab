"""What every task shares: the Task interface the loop drives, padding, and the encoder call."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xretrieve.trainer.config import TaskConfig

Feature = dict[str, Any]
Batch = dict[str, torch.Tensor]

# A 0-dim CPU bool in a batch: True when no row is padded. It stays on the host (to_device skips
# it), so the encoder can be called without an attention mask, sparing transformers' per-forward
# ``mask.all()`` check (a host-device synchronisation) and letting SDPA use its fused kernels.
NO_PADDING = "no_padding"
HOST_KEYS = frozenset({NO_PADDING})


@dataclass(frozen=True)
class TextSettings:
    """What featurisation needs to know about the tokenizer and the encoder."""

    tokenizer: Any
    max_length: int
    pad_id: int
    use_token_types: bool
    hidden_size: int
    dropout: float
    vocab_size: int
    layer_norm_eps: float = 1e-5


class Task(abc.ABC):
    """A task: its data (already featurised), its head on the shared encoder, its loss and its
    metrics. The main metric is in percent, higher is better."""

    main_metric: str = "accuracy"
    # The attributes one validation set lives in (swapped per language by ``use_language``).
    eval_state: tuple[str, ...] = ("eval_features",)

    def __init__(self, config: TaskConfig, text: TextSettings) -> None:
        self.config = config
        self.name = config.name
        self.text = text
        self.max_length = config.max_length or text.max_length
        self.train_features: list[Feature] = []
        self.eval_features: list[Feature] = []
        self.head: nn.Module = nn.Identity()
        self.languages: dict[str, dict[str, Any]] = {}

    @abc.abstractmethod
    def collate(self, features: Sequence[Feature], train: bool) -> Batch:
        """Pad a list of features into tensors."""

    @abc.abstractmethod
    def loss(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar training loss of one batch (encoder and head in train mode)."""

    @abc.abstractmethod
    def evaluate(self, encoder: nn.Module, run: RunContext) -> dict[str, float]:
        """Metrics on the validation features (called under torch.no_grad, eval mode)."""

    def head_info(self) -> dict[str, Any]:
        """A JSON description of the head for heads.json."""
        return {"type": self.config.type.value}

    def to(self, device: torch.device) -> None:
        """Move the head (and any fixed tensors of the task) to ``device``."""
        self.head.to(device)

    def set_validation(self, data: Any, path: Any) -> None:
        """Featurise ``data`` (a TaskData read from ``path``) as the validation set."""
        self.eval_features = self._featurise(data.examples)  # type: ignore[attr-defined]

    def add_language(self, lang: str, data: Any, path: Any) -> None:
        """One language's validation set (zero-shot cross-lingual evaluation)."""
        self.set_validation(data, path)
        self.languages[lang] = {name: getattr(self, name) for name in self.eval_state}

    def use_language(self, lang: str) -> None:
        """Make ``lang``'s validation set the one ``evaluate`` scores."""
        for name, value in self.languages[lang].items():
            setattr(self, name, value)

    def init_from_checkpoint(self, source: Any) -> None:  # noqa: B027 - an optional hook
        """Initialise the head from the base checkpoint folder when the checkpoint has a
        pretrained one (MLM); most heads are always fresh."""

    def feature_length(self, feature: Feature) -> int:
        """Tokens of one feature, for length-grouped batches."""
        return len(feature["input_ids"])

    @property
    def has_validation(self) -> bool:
        return bool(self.eval_features)

    def eval_batches(self, run: RunContext) -> Any:
        """Validation batches in order, moved to the run's device."""
        for start in range(0, len(self.eval_features), run.batch_size):
            chunk = self.eval_features[start : start + run.batch_size]
            yield chunk, to_device(self.collate(chunk, train=False), run.device)


@dataclass(frozen=True)
class RunContext:
    """Device, evaluation batch size and the autocast context factory of a run."""

    device: torch.device
    batch_size: int
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor but the host-side markers on ``device``; on CUDA host tensors are pinned
    first, so that the copy is asynchronous and the host goes on preparing the next batch."""
    pin = device.type == "cuda"
    moved = {}
    for key, value in batch.items():
        if key in HOST_KEYS or value.device == device:
            moved[key] = value
        elif pin and value.device.type == "cpu":
            moved[key] = value.pin_memory().to(device, non_blocking=True)
        else:
            moved[key] = value.to(device, non_blocking=True)
    return moved


def pad_ids(rows: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    """``(len(rows), longest)`` int64, right-padded with ``pad``."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def text_batch(features: Sequence[Feature], text: TextSettings) -> Batch:
    """input_ids / attention_mask (and token_type_ids when the encoder has token types)."""
    ids = [feature["input_ids"] for feature in features]
    batch = {
        "input_ids": pad_ids(ids, text.pad_id),
        "attention_mask": pad_ids([[1] * len(r) for r in ids], 0),
        NO_PADDING: torch.tensor(len({len(r) for r in ids}) == 1),
    }
    if text.use_token_types:
        batch["token_type_ids"] = pad_ids([feature["token_type_ids"] for feature in features], 0)
    return batch


def encode(encoder: nn.Module, batch: Batch) -> torch.Tensor:
    """Last hidden states ``(batch, seq, hidden)`` of the encoder. Neither kind of batch makes
    transformers read the mask back to the host (``mask.all()``, a device synchronisation in
    every forward): an unpadded batch goes without a mask (SDPA may then use its fused kernels),
    a padded one to an SDPA encoder as the 4D boolean key mask ``(batch, 1, 1, seq)`` that
    transformers passes through unchanged; other attention implementations get the 2D mask."""
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": attention_mask_for(encoder, batch)}
    if "token_type_ids" in batch:
        kwargs["token_type_ids"] = batch["token_type_ids"]
    return encoder(**kwargs).last_hidden_state


def attention_mask_for(encoder: nn.Module, batch: Batch) -> torch.Tensor | None:
    """The attention mask argument for ``encoder`` (see ``encode``)."""
    if NO_PADDING in batch and bool(batch[NO_PADDING].numpy()):
        return None
    mask = batch["attention_mask"]
    if getattr(getattr(encoder, "config", None), "_attn_implementation", None) == "sdpa":
        return mask[:, None, None, :].bool()
    return mask


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens ``(batch, hidden)``: the exporter's MEAN pooling."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def tokenize(
    text: TextSettings, first: list[str], second: list[str] | None, max_length: int
) -> list[Feature]:
    """Featurise texts (pairs when ``second`` is given), truncating to ``max_length`` tokens."""
    encoded = text.tokenizer(
        first,
        second,
        truncation=True,
        max_length=max_length,
        return_token_type_ids=text.use_token_types,
        return_attention_mask=False,
    )
    features = []
    for i in range(len(first)):
        feature = {"input_ids": encoded["input_ids"][i]}
        if text.use_token_types:
            feature["token_type_ids"] = encoded["token_type_ids"][i]
        features.append(feature)
    return features


class ClassificationHead(nn.Module):
    """RoBERTa-style head on the first token: dropout, dense + tanh, dropout, projection."""

    def __init__(self, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, n_out)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))
