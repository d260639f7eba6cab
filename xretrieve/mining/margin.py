"""Margin-based bitext mining (Artetxe and Schwenk 2019), with the semantics of LASER's
``source/mine_bitexts.py`` (``--mode mine``), vectorised.

For a candidate pair (x, y) the score is ``margin(cos(x, y), (fwd_mean[x] + bwd_mean[y]) / 2)``
where ``fwd_mean[x]`` is the mean similarity of x to its k nearest targets and ``bwd_mean[y]`` the
mean similarity of y to its k nearest sources. As in LASER's ``score_candidates``, every source
is scored against its k forward candidates and every target against its k backward candidates;
``Mode`` then selects pairs:

- ``FORWARD``: for each source, its best-scoring forward candidate (first on equal scores, i.e.
  the nearer neighbour, as ``argmax``).
- ``BACKWARD``: for each target, its best-scoring backward candidate.
- ``INTERSECT``: the forward best (x, y) of each source whose target's backward best is x.
- ``MAX``: forward and backward bests pooled, best score first, greedy one-to-one (a pair whose
  source or target was already taken is skipped). Equal scores are ordered by pool position
  (forward candidates by source row, then backward candidates by target row), a fixed tie-break
  where LASER's unstable ``np.argsort(-scores)`` leaves it unspecified.

LASER prints only pairs with ``score > threshold`` (default 0); here ``mine_rows`` returns every
selected pair and the caller applies a threshold with ``MinedPairs.above`` (``>=``, as BUCC's
extraction; ``at_or_above`` is that one cut, for every count and mask of extracted pairs).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xretrieve.core.progress import ProgressCallback
from xretrieve.core.row_blocks import Rows
from xretrieve.knn.exact import knn_both_ways


class Margin(enum.Enum):
    """How the similarity ``a`` and the neighbourhood average ``b`` combine."""

    RATIO = "ratio"  # a / b
    DISTANCE = "distance"  # a - b
    ABSOLUTE = "absolute"  # a


class Mode(enum.Enum):
    """Which candidates become mined pairs (LASER's ``--retrieval``)."""

    FORWARD = "forward"
    BACKWARD = "backward"
    INTERSECT = "intersect"
    MAX = "max"


@dataclass(frozen=True)
class MiningConfig:
    """``k`` neighbours per side for the margin (clamped to the other side's size), margin
    function, selection mode, kNN device (auto|cpu|cuda), and the bytes of device memory the
    GPU search may use (None: 80 % of the free memory)."""

    k: int = 4
    margin: Margin = Margin.RATIO
    mode: Mode = Mode.MAX
    device: str = "auto"
    gpu_memory: int | None = None


DEFAULT_CONFIG = MiningConfig()


def at_or_above(score: np.ndarray, threshold: float | None) -> np.ndarray:
    """The one threshold cut: (p,) bool, ``score >= threshold`` compared in float64 (a threshold
    halfway between two float32 scores rounds onto neither); None keeps every score."""
    score = np.asarray(score)
    if threshold is None:
        return np.ones(score.shape, dtype=bool)
    return score.astype(np.float64) >= threshold


@dataclass(frozen=True)
class MinedPairs:
    """Mined pairs best first: ``src_index``, ``tgt_index`` (p,) int64 rows of the source and
    target embeddings (or corpora), ``score`` (p,) float32 (or float64) margin scores
    (non-increasing)."""

    src_index: np.ndarray
    tgt_index: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def above(self, threshold: float | None) -> MinedPairs:
        """The pairs with ``score >= threshold`` (``at_or_above``; None keeps all)."""
        if threshold is None:
            return self
        keep = at_or_above(self.score, threshold)
        return MinedPairs(self.src_index[keep], self.tgt_index[keep], self.score[keep])

    def to_rows(
        self, src_texts: Sequence[str], tgt_texts: Sequence[str]
    ) -> list[tuple[float, str, str]]:
        """``(score, source text, target text)`` per pair, best first; ``src_texts`` and
        ``tgt_texts`` are what the indices point into."""
        return [
            (float(score), src_texts[src], tgt_texts[tgt])
            for src, tgt, score in zip(
                self.src_index.tolist(), self.tgt_index.tolist(), self.score.tolist(), strict=True
            )
        ]


def apply_margin(sims: np.ndarray, neighbourhood: np.ndarray, margin: Margin) -> np.ndarray:
    """``margin(a, b)`` elementwise: a / b, a - b or a (float32)."""
    if margin is Margin.RATIO:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (sims / neighbourhood).astype(np.float32)
    if margin is Margin.DISTANCE:
        return (sims - neighbourhood).astype(np.float32)
    return np.asarray(sims, dtype=np.float32).copy()


def candidate_scores(
    sims: np.ndarray,
    ids: np.ndarray,
    query_mean: np.ndarray,
    other_mean: np.ndarray,
    margin: Margin,
) -> np.ndarray:
    """Margin score of each query with each of its k candidates (LASER ``score_candidates``).

    ``sims``/``ids`` (n, k) from kNN; ``query_mean`` (n,) the mean of each query's k sims;
    ``other_mean`` (m,) the same for the candidates' side. Returns (n, k) float32.
    """
    neighbourhood = (query_mean[:, None] + other_mean[ids]) / 2
    return apply_margin(sims, neighbourhood, margin)


def select_pairs(
    fwd_sims: np.ndarray,
    fwd_ids: np.ndarray,
    bwd_sims: np.ndarray,
    bwd_ids: np.ndarray,
    margin: Margin = Margin.RATIO,
    mode: Mode = Mode.MAX,
) -> MinedPairs:
    """Score kNN candidates in both directions and select pairs by ``mode`` (see module doc).

    ``fwd_sims``/``fwd_ids`` (n, kf): each source's nearest targets; ``bwd_sims``/``bwd_ids``
    (m, kb): each target's nearest sources; best first, as from ``knn_both_ways``.
    """
    n, m = fwd_sims.shape[0], bwd_sims.shape[0]
    fwd_mean = fwd_sims.mean(axis=1, dtype=np.float32)
    bwd_mean = bwd_sims.mean(axis=1, dtype=np.float32)
    fwd_scores = candidate_scores(fwd_sims, fwd_ids, fwd_mean, bwd_mean, margin)
    bwd_scores = candidate_scores(bwd_sims, bwd_ids, bwd_mean, fwd_mean, margin)
    fwd_col = fwd_scores.argmax(axis=1)
    bwd_col = bwd_scores.argmax(axis=1)
    src_rows, tgt_rows = np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    fwd_best = fwd_ids[src_rows, fwd_col].astype(np.int64)
    fwd_best_score = fwd_scores[src_rows, fwd_col]
    bwd_best = bwd_ids[tgt_rows, bwd_col].astype(np.int64)
    bwd_best_score = bwd_scores[tgt_rows, bwd_col]

    if mode is Mode.FORWARD:
        return _best_first(src_rows, fwd_best, fwd_best_score)
    if mode is Mode.BACKWARD:
        return _best_first(bwd_best, tgt_rows, bwd_best_score)
    if mode is Mode.INTERSECT:
        mutual = bwd_best[fwd_best] == src_rows
        return _best_first(src_rows[mutual], fwd_best[mutual], fwd_best_score[mutual])
    src = np.concatenate((src_rows, bwd_best))
    tgt = np.concatenate((fwd_best, tgt_rows))
    score = np.concatenate((fwd_best_score, bwd_best_score))
    keep = greedy_one_to_one(src, tgt, score)
    return MinedPairs(src_index=src[keep], tgt_index=tgt[keep], score=score[keep])


def _best_first(src: np.ndarray, tgt: np.ndarray, score: np.ndarray) -> MinedPairs:
    order = np.argsort(-score, kind="stable")
    return MinedPairs(src_index=src[order], tgt_index=tgt[order], score=score[order])


def greedy_one_to_one(src: np.ndarray, tgt: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Positions of the edges a sequential greedy matching keeps, in the order it keeps them.

    The sequential greedy (LASER's ``max`` retrieval) walks edges by score descending (ties by
    position) and keeps an edge when neither endpoint is taken (``greedy_in_order``).

    ``src``, ``tgt`` (e,) int endpoints; ``score`` (e,). Returns (p,) int64 positions.
    """
    order = np.argsort(-score, kind="stable")
    n_src, n_tgt = int(src.max(initial=-1)) + 1, int(tgt.max(initial=-1)) + 1
    ranks = greedy_in_order(src[order], tgt[order], n_src, n_tgt)
    return order[ranks].astype(np.int64)


def greedy_in_order(src: np.ndarray, tgt: np.ndarray, n_src: int, n_tgt: int) -> np.ndarray:
    """Ranks (increasing) of the edges that the sequential greedy keeps when it walks the edges
    ``(src[i], tgt[i])`` in the order given, keeping an edge when neither endpoint is taken.

    Vectorised in rounds: an edge that comes first among all remaining edges sharing its source,
    and first among those sharing its target, is kept by the sequential greedy (every earlier
    edge touching it was discarded because of a kept edge that precedes it), so each round keeps
    all such edges at once and discards the remaining edges touching their endpoints. Each round
    keeps at least the first remaining edge; on mining data a handful of rounds suffice.

    ``src``, ``tgt`` (e,) ints below ``n_src``, ``n_tgt``. Returns (p,) int64 ranks.
    """
    size = src.size
    src_taken = np.zeros(n_src, dtype=bool)
    tgt_taken = np.zeros(n_tgt, dtype=bool)
    alive = np.arange(size)  # ranks of the remaining edges, increasing
    kept: list[np.ndarray] = []
    while alive.size:
        alive_src, alive_tgt = src[alive], tgt[alive]
        # The first (lowest) rank touching each endpoint; an unsorted scatter-min is far cheaper
        # than np.unique's sort.
        first_of_src = np.full(n_src, size, dtype=np.int64)
        np.minimum.at(first_of_src, alive_src, alive)
        first_of_tgt = np.full(n_tgt, size, dtype=np.int64)
        np.minimum.at(first_of_tgt, alive_tgt, alive)
        dominant = (first_of_src[alive_src] == alive) & (first_of_tgt[alive_tgt] == alive)
        accepted = alive[dominant]
        kept.append(accepted)
        src_taken[src[accepted]] = True
        tgt_taken[tgt[accepted]] = True
        alive = alive[~(src_taken[alive_src] | tgt_taken[alive_tgt])]
    return np.sort(np.concatenate(kept)).astype(np.int64) if kept else np.empty(0, np.int64)


def mine_rows(
    src_emb: Rows,
    tgt_emb: Rows,
    config: MiningConfig = DEFAULT_CONFIG,
    *,
    progress: ProgressCallback | None = None,
) -> MinedPairs:
    """Mine pairs between ``src_emb`` (n, d) and ``tgt_emb`` (m, d) float embeddings (arrays,
    memory maps or ``RowMatrix`` row selections).

    Rows are L2-normalised (cosine similarity), exact kNN runs both ways with ``config.k``
    neighbours on ``config.device``, then ``select_pairs`` applies the margin and mode.
    Rows should be distinct texts (LASER/XTREME ``--unify``); see ``xretrieve.mining.corpus.mine_corpora``.
    """
    if config.k < 1:
        raise ValueError(f"k must be at least 1, got {config.k}")
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = knn_both_ways(
        src_emb,
        tgt_emb,
        config.k,
        device=config.device,
        normalize=True,
        gpu_memory=config.gpu_memory,
        progress=progress,
    )
    return select_pairs(fwd_sims, fwd_ids, bwd_sims, bwd_ids, config.margin, config.mode)
