"""How many tokens an encoder's position embeddings hold: the one rule behind every maximum
length (loading a checkpoint for torch, exporting it, checking a training config).

RoBERTa-style models (XLM-R and kin) number positions from ``padding_idx + 1`` (Hugging Face's
``create_position_ids_from_input_ids``), so ``pad_token_id + 1`` position embeddings are never
used; other models use all of them."""

from __future__ import annotations

PADDING_OFFSET_MODELS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer"}
)

# XLM-R's and RoBERTa's padding index, assumed when a config names none.
_DEFAULT_PAD_TOKEN_ID = 1


def usable_positions(
    model_type: str | None, max_position_embeddings: int | None, pad_token_id: int | None
) -> int | None:
    """Tokens per text the position embeddings allow (None when the config gives no
    ``max_position_embeddings``): all of them, less ``pad_token_id + 1`` for a RoBERTa-style
    ``model_type``."""
    if not max_position_embeddings:
        return None
    offset = 0
    if model_type in PADDING_OFFSET_MODELS:
        pad = _DEFAULT_PAD_TOKEN_ID if pad_token_id is None else int(pad_token_id)
        offset = pad + 1
    return int(max_position_embeddings) - offset
