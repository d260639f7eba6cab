"""Text -> token ids for the encoders: the model's text prefix, truncation at the model's maximum
length (counted, so that it can be reported), and right-padded int64 batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.core.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of ``n`` texts, special tokens included, truncated to the model's maximum.

    ``ids``: one list of ints per text. ``lengths``: int64 ``(n,)``. ``truncated``: how many
    texts were cut at the maximum length."""

    ids: list[list[int]]
    lengths: np.ndarray
    truncated: int


class TextTokenizer:
    """A fast (Rust) tokenizer configured for embedding: ``text_prefix`` is prepended to every
    text (e.g. "query: " for E5), texts are truncated to ``max_length`` tokens including the
    special tokens, and batches are right-padded with ``pad_token_id``."""

    def __init__(
        self, tokenizer: Tokenizer, *, max_length: int, pad_token_id: int, text_prefix: str = ""
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.text_prefix = text_prefix

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        *,
        max_length: int | None = None,
        pad_token_id: int | None = None,
        text_prefix: str = "",
        lowercase: bool = False,
    ) -> TextTokenizer:
        """The tokenizer saved in ``directory`` (a checkpoint or an export). ``tokenizer.json`` is
        read directly; without it, transformers converts the slow tokenizer files. ``max_length``
        and ``pad_token_id`` default to the tokenizer's own settings. ``lowercase``: texts are
        lower-cased first (a sentence-transformers folder's ``do_lower_case``)."""
        directory = Path(directory)
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MissingDependencyError("tokenizers", "tokenizing text") from None
        if (directory / "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        else:
            # Slow (sentencepiece/vocab.txt) tokenizer only: transformers converts it to Rust.
            from transformers import AutoTokenizer

            try:
                hf_tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            except (OSError, ValueError) as error:
                raise InputError(directory, f"cannot load the tokenizer: {error}") from error
            tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        if lowercase:
            from exporters.st_pipeline import lowercase_tokenizer

            lowercase_tokenizer(tokenizer)
        if pad_token_id is None:
            pad_token_id = _pad_token_id(tokenizer)
        if max_length is None:
            max_length = tokenizer_max_length(directory)
        return cls(
            tokenizer, max_length=max_length, pad_token_id=pad_token_id, text_prefix=text_prefix
        )

    @property
    def vocab_size(self) -> int:
        """Token ids the tokenizer can produce (added tokens included)."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def prefix_tokens(self) -> int:
        """Tokens the text prefix takes at the start of every text, the special tokens before
        it included (as sentence-transformers counts a prompt: ``st_pipeline.prompt_token_count``);
        0 without a prefix."""
        from exporters.st_pipeline import prompt_token_count

        return prompt_token_count(self._tokenizer, self.text_prefix)

    def tokenize(self, texts: Sequence[str]) -> TokenizedTexts:
        """Token ids of ``texts`` (with the prefix), truncated to ``max_length``. An empty text
        gives just the special tokens."""
        if self.text_prefix:
            texts = [self.text_prefix + text for text in texts]
        encodings = self._tokenizer.encode_batch_fast(list(texts))
        ids = [encoding.ids for encoding in encodings]
        truncated = sum(1 for encoding in encodings if encoding.overflowing)
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        return TokenizedTexts(ids=ids, lengths=lengths, truncated=truncated)

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, int64 ``[batch, longest]``, right-padded."""
        longest = max((len(row) for row in ids), default=1)
        input_ids = np.full((len(ids), longest), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        return input_ids, attention_mask


def _pad_token_id(tokenizer: Tokenizer) -> int:
    padding = tokenizer.padding
    if padding is not None:
        return int(padding["pad_id"])
    for token in ("<pad>", "[PAD]"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0


def tokenizer_max_length(directory: Path) -> int:
    """The tokenizer's own limit: ``model_max_length`` of tokenizer_config.json when it is a real
    limit, else 512."""
    from xretrieve.core.readers import read_json_object

    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        value = read_json_object(config_path).get("model_max_length")
        # transformers writes a huge sentinel (1e30) when the limit is unknown.
        if isinstance(value, int | float) and 2 <= value <= 1_000_000:
            return int(value)
    return 512
