"""Workloads for the benchmarks: generated sentences (from a word list or a tokenizer's
vocabulary, with a realistic length distribution) and random unit vectors for kNN."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.core.errors import XRetrieveError

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)


WORDS = (
    "the of and to in is was for on that with as by at from this be are it an not or have "
    "der die und den von zu das mit sich des auf ist im dem nicht ein eine als auch "
    "le la les de des et un une est en du que qui dans pour pas sur au "
    "cat dog house tree water city river book car sun moon day night small big red green"
).split()


def make_sentences(
    n: int, seed: int = 0, median_tokens: float = 20.0, sigma: float = 0.6
) -> list[str]:
    """``n`` sentences of common words (one token each for XLM-R-style vocabularies), whose
    lengths follow a log-normal around ``median_tokens`` (special tokens included; BUCC and
    Tatoeba sentences have a median near 20), clipped to [3, 128]."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(median_tokens), sigma, size=n)), 3, 128)
    return [" ".join(rng.choice(WORDS, size=int(length) - 2)) for length in lengths]


@dataclass(frozen=True)
class WordPieces:
    """A tokenizer's vocabulary split for text generation: ``starts`` open a word (SentencePiece
    pieces with the ``▁`` marker, WordPiece pieces without ``##``), ``continuations`` extend one;
    both without their markers, alphabetic only (no special tokens, digits or punctuation)."""

    starts: tuple[str, ...]
    continuations: tuple[str, ...]


def word_pieces(vocabulary: Sequence[str], special_tokens: Sequence[str] = ()) -> WordPieces:
    """Split ``vocabulary`` (a tokenizer's pieces) into word-opening and continuing pieces,
    sorted for determinism; ``XRetrieveError`` when either kind is missing."""
    special = set(special_tokens)
    wordpiece = any(piece.startswith("##") for piece in vocabulary)
    starts, continuations = set(), set()
    for piece in vocabulary:
        if piece in special:
            continue
        if wordpiece:
            is_start, text = not piece.startswith("##"), piece.removeprefix("##")
        else:
            is_start, text = piece.startswith("\u2581"), piece.removeprefix("\u2581")
        if not text.isalpha():
            continue
        (starts if is_start else continuations).add(text)
    if not starts or not continuations:
        raise XRetrieveError("the vocabulary has no word-opening or no word-continuing pieces")
    return WordPieces(tuple(sorted(starts)), tuple(sorted(continuations)))


def make_vocabulary_sentences(
    pieces: WordPieces,
    n: int,
    seed: int = 0,
    median_tokens: float = 25.0,
    sigma: float = 0.55,
    max_tokens: int = 128,
) -> list[str]:
    """``n`` sentences of word-like tokens glued from vocabulary ``pieces``, whose token counts
    (two special tokens included) follow a log-normal around ``median_tokens`` clipped to
    [3, ``max_tokens``] (BUCC sentences: median about 25 XLM-R tokens). A word is one opening
    piece and 0-2 continuing ones (each 1 + geometric(0.6) - 1, so most words are one piece), so
    a tokenizer that segments them back into those pieces gives the drawn count; segmentations
    that merge or split pieces move it a little (``length_summary`` reports what came out)."""
    rng = np.random.default_rng(seed)
    targets = np.clip(np.round(rng.lognormal(np.log(median_tokens), sigma, size=n)), 3, max_tokens)
    starts, continuations = np.asarray(pieces.starts), np.asarray(pieces.continuations)
    sentences = []
    for target in targets.astype(int):
        remaining, words = target - 2, []
        while remaining > 0:
            extra = min(int(rng.geometric(0.6)) - 1, 2, remaining - 1)
            word = str(rng.choice(starts)) + "".join(rng.choice(continuations, size=extra))
            words.append(word)
            remaining -= 1 + extra
        sentences.append(" ".join(words))
    return sentences


def length_summary(lengths: np.ndarray, max_length: int) -> dict[str, float]:
    """Token-count distribution of a workload: median, mean, p10/p90/p99, max, and the fraction
    of texts at ``max_length`` (truncated, or exactly at the cap)."""
    lengths = np.asarray(lengths)
    return {
        "texts": int(lengths.size),
        "median": float(np.median(lengths)),
        "mean": round(float(np.mean(lengths)), 2),
        "p10": float(np.percentile(lengths, 10)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "fraction_at_max_length": round(float(np.mean(lengths >= max_length)), 4),
    }


def make_knn_data(
    n_src: int,
    n_tgt: int,
    dim: int,
    seed: int = 0,
    *,
    dtype: type = np.float32,
    device: str = "cpu",
    block_rows: int = 262144,
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_src, dim)`` and ``(n_tgt, dim)`` L2-normalised random rows of ``dtype`` (float32 or
    float16); half of the smaller side are planted noisy translation pairs (so mining has
    something to find), the targets shuffled. Generated block by block with torch on
    ``device`` (a GPU makes 4M x 1024 take seconds); the same seed gives the same rows on the
    same kind of device."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    planted = min(n_src, n_tgt) // 2
    src = np.empty((n_src, dim), dtype=dtype)
    tgt = np.empty((n_tgt, dim), dtype=dtype)
    # Generated target row j lands at row position[j]: a shuffle without a second copy.
    position = np.argsort(np.random.default_rng(seed).permutation(n_tgt))

    def normal(rows: int) -> torch.Tensor:
        return torch.randn((rows, dim), generator=generator, device=device)

    def store(values: torch.Tensor) -> np.ndarray:
        values = torch.nn.functional.normalize(values, dim=1)
        return values.to(torch.float16 if dtype == np.float16 else torch.float32).cpu().numpy()

    for start in range(0, max(n_src, n_tgt), block_rows):
        src_rows = normal(max(0, min(n_src, start + block_rows) - start))
        if len(src_rows):
            src[start : start + len(src_rows)] = store(src_rows)
        tgt_rows = normal(max(0, min(n_tgt, start + block_rows) - start))
        pairs = max(0, min(planted, start + block_rows) - start)
        if pairs:
            tgt_rows[:pairs] = src_rows[:pairs] + 0.5 * normal(pairs)
        if len(tgt_rows):
            tgt[position[start : start + len(tgt_rows)]] = store(tgt_rows)
    return src, tgt
