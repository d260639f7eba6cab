"""The bitext-mining Python API (also importable from ``xretrieve``): ``mine(src_texts,
tgt_texts, model=...)`` and ``mine_embeddings(src_emb, tgt_emb)`` return ``MinedPairs``; and the
threshold policy they share with ``xretrieve mine``: when none is given, the model's own
calibrated threshold when it has one for this margin and ``k`` (the default model has one),
else ``DEFAULT_RATIO_THRESHOLD`` for the ratio margin, else none (every selected pair is kept)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.arguments import (
    check_int,
    check_model,
    check_optional_str,
    check_progress,
    check_texts,
    check_threshold,
)
from xretrieve.core.errors import ArgumentError, XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.settings import Device, ThresholdSource, parse_setting
from xretrieve.formats import Corpus
from xretrieve.mining.margin import Margin, MinedPairs, MiningConfig, Mode
from xretrieve.mining.sources import EmbeddingSource, EncoderSource, TextEncoder

# Threshold for the ratio margin when neither the caller nor the model gives one: LASER's mined
# corpora (WikiMatrix, CCMatrix) keep ratio-margin scores around 1.04-1.06.
DEFAULT_RATIO_THRESHOLD = 1.05


def mining_config(
    k: int = 4,
    margin: Margin | str = "ratio",
    mode: Mode | str = "max",
    device: Device | str = Device.AUTO,
    gpu_memory: int | None = None,
) -> MiningConfig:
    """A ``MiningConfig`` from enums or their string values; ``ArgumentError`` naming the
    argument for a bad one (``k`` and ``gpu_memory`` positive integers, ``device`` auto, cpu,
    cuda or cuda:N)."""
    return MiningConfig(
        k=check_int("k", k),
        margin=parse_setting("margin", Margin, margin),
        mode=parse_setting("mode", Mode, mode),
        device=check_search_device(device),
        gpu_memory=None if gpu_memory is None else check_int("gpu_memory", gpu_memory),
    )


def check_search_device(device: Any) -> str:
    """``device`` of the kNN search (auto, cpu, cuda, cuda:N or an encoder ``Device``) as a
    string; ``ArgumentError`` otherwise."""
    from xretrieve.knn.exact import check_device

    value = getattr(device, "value", device)
    if isinstance(value, str):
        try:
            return check_device(value)
        except XRetrieveError:
            pass
    raise ArgumentError("device", f"must be auto, cpu, cuda or cuda:N, not {device!r}")


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold applied (None: none) and where it came from."""

    threshold: float | None
    source: ThresholdSource


def default_threshold(
    config: MiningConfig, calibrated: Mapping[str, Any] | None = None
) -> ThresholdChoice:
    """The threshold for ``config`` when the caller gives none: ``calibrated`` (a model's
    ``mining_threshold``) when it was calibrated for this margin and ``k``, else the ratio
    margin's ``DEFAULT_RATIO_THRESHOLD``, else none."""
    if (
        calibrated is not None
        and calibrated.get("margin") == config.margin.value
        and calibrated.get("k") == config.k
    ):
        return ThresholdChoice(float(calibrated["threshold"]), ThresholdSource.MODEL)
    if config.margin is Margin.RATIO:
        return ThresholdChoice(DEFAULT_RATIO_THRESHOLD, ThresholdSource.DEFAULT)
    return ThresholdChoice(None, ThresholdSource.NONE)


def _given_or_default(
    threshold: float | None, config: MiningConfig, calibrated: Mapping[str, Any] | None
) -> ThresholdChoice:
    threshold = check_threshold("threshold", threshold)
    if threshold is None:
        return default_threshold(config, calibrated)
    return ThresholdChoice(threshold, ThresholdSource.GIVEN)


def model_threshold(source: EmbeddingSource | TextEncoder | None) -> Mapping[str, Any] | None:
    """The calibrated threshold of the encoder behind ``source``, if it has one."""
    encoder = source.encoder if isinstance(source, EncoderSource) else source
    return getattr(encoder, "mining_threshold", None)


def mine(
    src_texts: Sequence[str],
    tgt_texts: Sequence[str],
    model: str | Path | TextEncoder | None = "default",
    k: int = 4,
    margin: Margin | str = Margin.RATIO,
    mode: Mode | str = Mode.MAX,
    threshold: float | None = None,
    *,
    device: Device | str = Device.AUTO,
    gpu_memory: int | None = None,
    text_prefix: str | None = None,
    progress: ProgressCallback | None = None,
    prompt: str | None = None,
) -> MinedPairs:
    """Mine translation pairs between two lists of sentences.

    ``model``: a name for ``load_encoder`` (export or checkpoint directory, Hugging Face id,
    "default") or an already loaded encoder (anything with ``encode(texts) -> (n, d)``).
    Sentences are embedded and mined once per distinct text (LASER's ``unify``); the returned
    ``src_index``/``tgt_index`` point into ``src_texts``/``tgt_texts`` (a repeated sentence by
    its first occurrence), best score first, with ``score >= threshold`` (None: the model's
    calibrated threshold, else 1.05 for the ratio margin, else no cut; see the module doc).
    ``gpu_memory`` bounds the bytes of device memory the GPU search uses (default: 80 % of
    the free memory). ``text_prefix`` replaces the model's prefix, or ``prompt`` names one of
    its prompts (``load_encoder``).

    Every argument is checked before any work; a bad one raises ``ArgumentError`` naming it:
    ``src_texts``/``tgt_texts`` must be non-empty lists of ``str`` (a bare string is refused,
    not mined character by character), ``k`` a positive integer, ``threshold`` a finite number
    or None.
    """
    src = Corpus(Path("src_texts"), _sentences("src_texts", src_texts))
    tgt = Corpus(Path("tgt_texts"), _sentences("tgt_texts", tgt_texts))
    config = mining_config(k, margin, mode, device, gpu_memory)
    model = check_model("model", model)
    text_prefix = check_optional_str("text_prefix", text_prefix)
    prompt = check_optional_str("prompt", prompt)
    check_threshold("threshold", threshold)
    check_progress(progress)
    from xretrieve.mining.corpus import mine_corpora
    from xretrieve.mining.sources import embed_pair, resolve_encoder

    encoder = resolve_encoder(model, text_prefix=text_prefix, prompt=prompt, progress=progress)
    choice = _given_or_default(threshold, config, model_threshold(encoder))
    src_emb, tgt_emb = embed_pair(EncoderSource(encoder), src, tgt, progress)
    mining = mine_corpora(src, tgt, src_emb, tgt_emb, config, progress=progress)
    pairs = mining.pairs
    rows = MinedPairs(
        src_index=mining.src_rows[pairs.src_index],
        tgt_index=mining.tgt_rows[pairs.tgt_index],
        score=pairs.score,
    )
    return rows.above(choice.threshold)


def mine_embeddings(
    src_emb: np.ndarray,
    tgt_emb: np.ndarray,
    k: int = 4,
    margin: Margin | str = Margin.RATIO,
    mode: Mode | str = Mode.MAX,
    threshold: float | None = None,
    *,
    device: Device | str = Device.AUTO,
    gpu_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> MinedPairs:
    """Mine pairs between the rows of ``src_emb`` (n, d) and ``tgt_emb`` (m, d) float
    embeddings (L2-normalised here; arrays or ``np.load(..., mmap_mode="r")`` memory maps,
    which are read block by block). Indices are rows; ``threshold`` None: 1.05 for the ratio
    margin (no model is known to have calibrated one), else no cut. Rows should be distinct
    texts (``mine`` takes care of that for sentences). A matrix that is not 2-D float, or holds
    a NaN or an infinity (as ``xretrieve mine`` refuses such a file), and every other bad
    argument raise ``ArgumentError`` naming it, before any search."""
    from xretrieve.mining.margin import mine_rows

    config = mining_config(k, margin, mode, device, gpu_memory)
    choice = _given_or_default(threshold, config, None)
    check_progress(progress)
    src_emb = _embedding_matrix("src_emb", src_emb)
    tgt_emb = _embedding_matrix("tgt_emb", tgt_emb)
    if src_emb.shape[1] != tgt_emb.shape[1]:
        raise ArgumentError(
            "src_emb",
            f"has dimension {src_emb.shape[1]}, tgt_emb {tgt_emb.shape[1]}; they must match",
        )
    return mine_rows(src_emb, tgt_emb, config, progress=progress).above(choice.threshold)


def _sentences(name: str, texts: Any) -> tuple[str, ...]:
    sentences = check_texts(name, texts)
    if not sentences:
        raise ArgumentError(name, "must hold at least one sentence")
    return sentences


def _embedding_matrix(name: str, matrix: Any) -> np.ndarray:
    """``matrix`` as an array (a memory map stays one), checked: 2-D floating, non-empty, every
    value finite (one streamed pass)."""
    from xretrieve.core.row_blocks import find_non_finite

    if not isinstance(matrix, np.ndarray):
        try:
            matrix = np.asarray(matrix)
        except (ValueError, TypeError):
            raise ArgumentError(name, "must be a 2-D float matrix (n, d)") from None
    if matrix.ndim != 2 or not matrix.shape[0] or not np.issubdtype(matrix.dtype, np.floating):
        raise ArgumentError(
            name, f"must be a non-empty 2-D float matrix (n, d), not {matrix.dtype} {matrix.shape}"
        )
    bad_row = find_non_finite(matrix)
    if bad_row is not None:
        raise ArgumentError(
            name, f"row {bad_row} holds NaN or infinite values; embeddings must be finite"
        )
    return matrix
