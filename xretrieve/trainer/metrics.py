"""Task metrics, all in percent: SQuAD exact match / F1 (the official v1.1/v2.0 evaluation script's
normalisation and no-answer rule), accuracy, and tagging accuracy over labelled words."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse white space (as the
    official SQuAD evaluation script)."""
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 after normalisation; an empty side scores 1 only if both are empty (the
    v2.0 rule for unanswerable questions)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Exact match and F1 in percent over the questions of ``golds`` (id -> gold answer texts; an
    empty list marks an unanswerable question whose only correct prediction is ""). Each question
    scores its best match over gold answers; a question without a prediction scores 0. With
    unanswerable questions present, also ``has_ans_*`` / ``no_ans_*`` breakdowns."""
    if not golds:
        raise ValueError("squad_scores needs at least one question")
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, answers in golds.items():
        prediction = predictions.get(qid)
        references = [answer for answer in answers if normalize_answer(answer)] or [""]
        if prediction is None:
            em[qid] = f1[qid] = 0.0
            continue
        em[qid] = max(exact_match(prediction, gold) for gold in references)
        f1[qid] = max(token_f1(prediction, gold) for gold in references)
    scores = {
        "exact_match": 100.0 * float(np.mean(list(em.values()))),
        "f1": 100.0 * float(np.mean(list(f1.values()))),
    }
    has_ans = [qid for qid, answers in golds.items() if any(normalize_answer(a) for a in answers)]
    no_ans = [qid for qid in golds if qid not in set(has_ans)]
    if no_ans:
        for prefix, ids in (("has_ans", has_ans), ("no_ans", no_ans)):
            if ids:
                scores[f"{prefix}_exact_match"] = 100.0 * float(np.mean([em[q] for q in ids]))
                scores[f"{prefix}_f1"] = 100.0 * float(np.mean([f1[q] for q in ids]))
    return scores


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Percent of equal entries; ``predictions`` and ``labels`` are int arrays of one shape."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"shape mismatch {predictions.shape} vs {labels.shape}")
    if labels.size == 0:
        raise ValueError("accuracy of no examples")
    return 100.0 * float(np.mean(predictions == labels))


def tagging_accuracy(
    predictions: np.ndarray, labels: np.ndarray, ignore_index: int = -100
) -> float:
    """Percent of labelled positions (``labels != ignore_index``, i.e. first sub-tokens of words)
    whose predicted tag is right; ``(batch, seq)`` int arrays."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    mask = labels != ignore_index
    if not mask.any():
        raise ValueError("tagging accuracy of no labelled words")
    return 100.0 * float(np.mean(predictions[mask] == labels[mask]))


def recall_at_1(sims: np.ndarray, positives: np.ndarray) -> float:
    """Percent of rows whose highest-scoring column is a positive; ``sims`` (n, m) float and
    ``positives`` (n, m) bool."""
    best = np.argmax(sims, axis=1)
    return 100.0 * float(np.mean(positives[np.arange(len(best)), best]))
