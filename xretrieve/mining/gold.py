"""Scoring mined pairs against gold pairs (BUCC 2018), with the semantics of LASER's ``tasks/bucc/bucc.py`` and
XTREME's ``third_party/utils_retrieve.py`` (``mine_bitext``, ``bucc_optimize``, ``bucc_extract``,
``bucc_eval``).

1. Mine over distinct texts (``--unify``): duplicate sentences are embedded and searched once.
2. Map mined text pairs to id pairs: a text (compared after ``strip()``, as ``read_sent2id``) that
   occurs under several ids maps to no id, so its candidates are dropped; the gold keeps its
   pairs, which therefore count as missed. A pair mined more than once keeps its best score.
3. On the tuning split, choose the threshold maximising F1 against the gold (``bucc_optimize``):
   scan candidates best first; the threshold lies halfway between the best-F1 candidate's score
   and the next lower score. Two deliberate refinements, since a threshold cannot separate
   candidates with equal scores:

   - F1 is only evaluated after the last of a run of tied scores (XTREME evaluates mid-run
     positions that no threshold can realise); "the next score" is the next *distinct* one.
   - When the best F1 is reached at the lowest score, the threshold is that score (XTREME reads
     past the end of the list there). When no candidate is correct, every threshold has F1 0 and
     the threshold is set just above the highest score, so nothing is extracted (XTREME keeps
     its initial 0, which extracts everything under the ratio margin).

4. Extract the evaluation candidates with ``score >= threshold`` (``bucc_extract``) and report
   precision, recall and F1 in percent on id pairs (all 0 when nothing extracted is correct).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.progress import ProgressCallback
from xretrieve.formats import BuccSplit, Corpus
from xretrieve.mining.corpus import id_candidates, mine_corpora
from xretrieve.mining.margin import DEFAULT_CONFIG, MinedPairs, MiningConfig, at_or_above


@dataclass(frozen=True)
class BuccResult:
    """BUCC scores for one language pair, in percent.

    ``precision``, ``recall``, ``f1`` and ``oracle_f1`` (the best F1 any threshold reaches on
    the evaluation split) are None when the evaluation split has no gold.
    """

    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    tune_f1: float
    oracle_f1: float | None
    n_candidates: int
    n_extracted: int
    n_gold: int | None


def gold_mask(
    candidates: MinedPairs, gold: frozenset[tuple[str, str]], src: Corpus, tgt: Corpus
) -> np.ndarray:
    """(c,) bool: whether each candidate's id pair is in ``gold`` (``candidates`` as
    ``id_candidates`` gives them: corpus rows)."""
    if src.ids is None or tgt.ids is None:
        raise InputError(src.path if src.ids is None else tgt.path, "BUCC scoring needs ids")
    src_row = {sentence_id: row for row, sentence_id in enumerate(src.ids)}
    tgt_row = {sentence_id: row for row, sentence_id in enumerate(tgt.ids)}
    gold_codes = np.array([src_row[s] * len(tgt) + tgt_row[t] for s, t in gold], dtype=np.int64)
    return np.isin(candidates.src_index * len(tgt) + candidates.tgt_index, gold_codes)


def optimize_threshold(score: np.ndarray, correct: np.ndarray, n_gold: int) -> tuple[float, float]:
    """``(threshold, best_f1)``: the threshold maximising F1 (a fraction) on these candidates.

    ``score`` (c,) float, ``correct`` (c,) bool, ``n_gold`` the gold size. See the module doc,
    step 3, for ties, the last candidate and the no-correct-candidate case.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return math.inf, 0.0
    order = np.argsort(-score, kind="stable")
    ranked, hits = score[order], np.asarray(correct, dtype=bool)[order]
    n_correct = np.cumsum(hits)
    run_end = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    n_extracted = run_end + 1
    f1 = 2 * n_correct[run_end] / (n_extracted + max(n_gold, 1))  # = 2PR / (P + R)
    if not n_correct[-1]:
        return float(np.nextafter(ranked[0], math.inf)), 0.0
    best = int(np.argmax(f1))  # first maximum, as the strict ">" of bucc_optimize
    position = run_end[best]
    if position + 1 < ranked.size:
        threshold = (ranked[position] + ranked[position + 1]) / 2
    else:
        threshold = ranked[position]
    return float(threshold), float(f1[best])


def precision_recall_f1(
    score: np.ndarray, correct: np.ndarray, n_gold: int, threshold: float | None
) -> tuple[float, float, float, int]:
    """``(precision, recall, f1, n_extracted)`` in percent for candidates with
    ``score >= threshold`` (``at_or_above``); all three are 0 when no extracted candidate is
    correct."""
    extracted = at_or_above(score, threshold)
    n_extracted = int(extracted.sum())
    n_correct = int(np.asarray(correct)[extracted].sum())
    if n_correct == 0:
        return 0.0, 0.0, 0.0, n_extracted
    precision = n_correct / n_extracted
    recall = n_correct / n_gold
    f1 = 2 * precision * recall / (precision + recall)
    return 100 * precision, 100 * recall, 100 * f1, n_extracted


def tune_threshold(
    split: BuccSplit,
    src_emb: np.ndarray,
    tgt_emb: np.ndarray,
    config: MiningConfig = DEFAULT_CONFIG,
    *,
    progress: ProgressCallback | None = None,
) -> tuple[float, float]:
    """Mine ``split`` and return ``(threshold, tune_f1 percent)`` chosen against its gold."""
    if split.gold is None:
        where = split.gold_path or split.src.path
        raise InputError(where, f"the tuning split {split.split!r} needs a gold file")
    mining = mine_corpora(split.src, split.tgt, src_emb, tgt_emb, config, progress=progress)
    candidates = id_candidates(mining, split.src, split.tgt)
    correct = gold_mask(candidates, split.gold, split.src, split.tgt)
    threshold, f1 = optimize_threshold(candidates.score, correct, len(split.gold))
    return threshold, 100 * f1


@dataclass(frozen=True)
class BuccScoring:
    """``result`` plus what it was computed from on the evaluation split: its id-level
    ``candidates`` (``id_candidates``) and, when it has gold, ``correct`` (one bool per
    candidate), e.g. for a bootstrap over its sentences."""

    result: BuccResult
    candidates: MinedPairs
    correct: np.ndarray | None


def apply_threshold(
    evaluation: BuccSplit,
    src_emb: np.ndarray,
    tgt_emb: np.ndarray,
    threshold: float,
    tune_f1: float,
    config: MiningConfig = DEFAULT_CONFIG,
    *,
    progress: ProgressCallback | None = None,
) -> BuccScoring:
    """Mine ``evaluation`` and score it at ``threshold`` (tuned elsewhere, with ``tune_f1``):
    the second half of ``xretrieve.evaluation.bucc.score_bucc``, also returning the scored candidates."""
    mining = mine_corpora(
        evaluation.src, evaluation.tgt, src_emb, tgt_emb, config, progress=progress
    )
    candidates = id_candidates(mining, evaluation.src, evaluation.tgt)
    if evaluation.gold is None:
        n_extracted = len(candidates.above(threshold))
        result = BuccResult(
            threshold, None, None, None, tune_f1, None, len(candidates), n_extracted, None
        )
        return BuccScoring(result, candidates, None)
    correct = gold_mask(candidates, evaluation.gold, evaluation.src, evaluation.tgt)
    n_gold = len(evaluation.gold)
    precision, recall, f1, n_extracted = precision_recall_f1(
        candidates.score, correct, n_gold, threshold
    )
    _, oracle = optimize_threshold(candidates.score, correct, n_gold)
    result = BuccResult(
        threshold=threshold,
        precision=precision,
        recall=recall,
        f1=f1,
        tune_f1=tune_f1,
        oracle_f1=100 * oracle,
        n_candidates=len(candidates),
        n_extracted=n_extracted,
        n_gold=n_gold,
    )
    return BuccScoring(result, candidates, correct)
