"""XTREME's per-language metrics, in percent, with the semantics of its ``evaluate.py``: they are
``xretrieve.evaluation.metrics`` (one implementation, which the trainer validates with too), named
here for code that scores XTREME submissions."""

from xretrieve.evaluation.metrics import (
    MLQA_NORMALIZERS,
    SQUAD_NORMALIZER,
    AnswerNormalizer,
    ExactMatchF1,
    PrecisionRecallF1,
    QaQuestion,
    accuracy,
    answer_f1,
    exact_match,
    pair_f1,
    qa_scores,
    span_f1,
)

__all__ = [
    "MLQA_NORMALIZERS",
    "SQUAD_NORMALIZER",
    "AnswerNormalizer",
    "ExactMatchF1",
    "PrecisionRecallF1",
    "QaQuestion",
    "accuracy",
    "answer_f1",
    "exact_match",
    "pair_f1",
    "qa_scores",
    "span_f1",
]
