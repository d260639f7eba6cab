"""Mining two corpora over their distinct texts, with the semantics of LASER's
``tasks/bucc/bucc.py`` and XTREME's ``third_party/utils_retrieve.py`` (``mine_bitext`` with
``--unify``): duplicate sentences are embedded and searched once, and mined text pairs map back
to id pairs (a text, compared after ``strip()`` as ``read_sent2id`` does, that occurs under
several ids maps to no id, so its candidates are dropped; a pair mined more than once keeps its
best score)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.row_blocks import Rows, select_rows
from xretrieve.formats import Corpus, distinct_texts
from xretrieve.mining.margin import DEFAULT_CONFIG, MinedPairs, MiningConfig, mine_rows


@dataclass(frozen=True)
class CorpusMining:
    """Pairs mined between the distinct texts of two corpora.

    ``src_rows`` (u,) int64: the corpus row of each distinct source text (first occurrence);
    ``src_inverse`` (n,) int64: the distinct index of each corpus row; same for ``tgt_*``.
    ``pairs`` indexes distinct texts (``pairs.src_index`` into ``src_rows``).
    """

    src_rows: np.ndarray
    src_inverse: np.ndarray
    tgt_rows: np.ndarray
    tgt_inverse: np.ndarray
    pairs: MinedPairs


def mine_corpora(
    src: Corpus,
    tgt: Corpus,
    src_emb: Rows,
    tgt_emb: Rows,
    config: MiningConfig = DEFAULT_CONFIG,
    *,
    progress: ProgressCallback | None = None,
) -> CorpusMining:
    """Mine over the distinct texts of ``src`` and ``tgt``; ``src_emb`` (len(src), d) and
    ``tgt_emb`` (len(tgt), d) have one row per corpus line (a duplicate's first row is used),
    in memory or memory-mapped."""
    if src_emb.shape[0] != len(src) or tgt_emb.shape[0] != len(tgt):
        raise ValueError(
            f"embeddings have {src_emb.shape[0]} and {tgt_emb.shape[0]} rows, "
            f"corpora {len(src)} and {len(tgt)} lines"
        )
    if src_emb.shape[1] != tgt_emb.shape[1]:
        raise InputError(
            tgt.path,
            f"embedding dimension {tgt_emb.shape[1]} differs from {src.path}'s {src_emb.shape[1]}",
        )
    src_rows, src_inverse = distinct_texts(src.texts)
    tgt_rows, tgt_inverse = distinct_texts(tgt.texts)
    # A memory-mapped file stays on disk: the distinct rows are read block by block.
    pairs = mine_rows(
        select_rows(src_emb, src_rows), select_rows(tgt_emb, tgt_rows), config, progress=progress
    )
    return CorpusMining(src_rows, src_inverse, tgt_rows, tgt_inverse, pairs)


def _unambiguous_rows(corpus: Corpus, distinct_rows: np.ndarray) -> np.ndarray:
    """For each distinct text, its corpus row when its stripped text occurs once, else -1."""
    counts = Counter(text.strip() for text in corpus.texts)
    return np.array(
        [row if counts[corpus.texts[row].strip()] == 1 else -1 for row in distinct_rows.tolist()],
        dtype=np.int64,
    )


def id_candidates(mining: CorpusMining, src: Corpus, tgt: Corpus) -> MinedPairs:
    """The mined pairs BUCC scoring sees: both texts must map to a single id (step 2 above).
    ``src_index``, ``tgt_index``: corpus rows; ``score`` float64; best first."""
    src_row = _unambiguous_rows(src, mining.src_rows)[mining.pairs.src_index]
    tgt_row = _unambiguous_rows(tgt, mining.tgt_rows)[mining.pairs.tgt_index]
    score = mining.pairs.score.astype(np.float64)
    keep = (src_row >= 0) & (tgt_row >= 0)
    src_row, tgt_row, score = src_row[keep], tgt_row[keep], score[keep]
    # Best score per id pair: visit best first, keep each pair's first occurrence.
    order = np.argsort(-score, kind="stable")
    codes = src_row[order] * len(tgt) + tgt_row[order]
    _, first = np.unique(codes, return_index=True)
    chosen = order[np.sort(first)]
    return MinedPairs(src_row[chosen], tgt_row[chosen], score[chosen])
