"""XTREME's per-language metrics, in percent, with the semantics of its ``evaluate.py``: accuracy
of stripped lines, seqeval's chunk F1 for tagging, the F1 of BUCC's pair sets, and exact match /
F1 of answer strings (SQuAD v1.1's normalisation, or MLQA's per answer language).

Inputs are already read and checked (``submission``); nothing here touches a file."""

from __future__ import annotations

import re
import string
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from xretrieve.core.errors import MissingDependencyError


@dataclass(frozen=True)
class PrecisionRecallF1:
    """Percentages (0-100)."""

    f1: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float]:
        return {"f1": self.f1, "precision": self.precision, "recall": self.recall}


@dataclass(frozen=True)
class ExactMatchF1:
    """Percentages (0-100) over ``questions`` gold questions, of which ``unanswered`` had no
    prediction (scored 0, as the reference does)."""

    exact_match: float
    f1: float
    questions: int
    unanswered: int

    def as_dict(self) -> dict[str, float]:
        return {"exact_match": self.exact_match, "f1": self.f1}


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Percent of positions where ``predicted[i] == gold[i]``; both of one length, not empty."""
    correct = sum(int(p == g) for p, g in zip(predicted, gold, strict=True))
    return float(correct) / len(predicted) * 100


def pair_f1(gold: Sequence[str], predicted: Sequence[str]) -> PrecisionRecallF1:
    """BUCC: each line is split on tabs into a pair (or any tuple); precision and recall of the
    *sets* of tuples, so repeated lines count once; 0 everywhere when nothing is right."""
    gold_pairs = {tuple(line.split("\t")) for line in gold}
    predicted_pairs = {tuple(line.split("\t")) for line in predicted}
    correct = len(gold_pairs & predicted_pairs)
    if correct == 0:
        return PrecisionRecallF1(f1=0.0, precision=0.0, recall=0.0)
    precision = correct / len(predicted_pairs)
    recall = correct / len(gold_pairs)
    f1 = 2 * precision * recall / (precision + recall)
    return PrecisionRecallF1(f1=f1 * 100, precision=precision * 100, recall=recall * 100)


def span_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> PrecisionRecallF1:
    """seqeval's default (CoNLL-style, non-strict) micro precision, recall and F1 over chunks, as
    XTREME scores PAN-X and UD-POS (POS tags too go through seqeval's chunking: ``NOUN`` reads as
    tag ``N`` of type ``OUN``). TaggedSentences pair up one to one, each of one length in both."""
    try:
        from seqeval.metrics import f1_score, precision_score, recall_score
    except ImportError as error:
        raise MissingDependencyError("seqeval", "Scoring XTREME tagging tasks") from error

    gold_lists = [list(sentence) for sentence in gold]
    predicted_lists = [list(sentence) for sentence in predicted]
    with warnings.catch_warnings():
        # seqeval warns for every non-IOB tag (all of UD-POS) and for 0/0 ratios (scored 0).
        warnings.simplefilter("ignore")
        f1 = f1_score(gold_lists, predicted_lists)
        precision = precision_score(gold_lists, predicted_lists)
        recall = recall_score(gold_lists, predicted_lists)
    return PrecisionRecallF1(
        f1=float(f1) * 100, precision=float(precision) * 100, recall=float(recall) * 100
    )


@dataclass(frozen=True)
class AnswerNormalizer:
    """Lower-case, drop punctuation, drop articles, re-join tokens with single spaces: the order
    of SQuAD v1.1's ``normalize_answer`` and of MLQA's.

    ``is_punctuation`` decides per character; ``articles`` (or None) is replaced by a space;
    ``tokenize`` splits the result (whitespace, or MLQA's mixed segmentation for Chinese)."""

    is_punctuation: Callable[[str], bool]
    articles: re.Pattern[str] | None
    tokenize: Callable[[str], list[str]]

    def __call__(self, text: str) -> str:
        text = "".join(ch for ch in text.lower() if not self.is_punctuation(ch))
        if self.articles is not None:
            text = self.articles.sub(" ", text)
        return " ".join(token for token in self.tokenize(text) if token.strip() != "")


_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _ascii_punctuation(ch: str) -> bool:
    return ch in _ASCII_PUNCTUATION


def _unicode_punctuation(ch: str) -> bool:
    """MLQA's PUNCT: every character of a Unicode category P*, plus ASCII's punctuation (which
    also holds symbols such as ``$+<=>^`|~``)."""
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def _whitespace_tokens(text: str) -> list[str]:
    return text.split()


_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _mixed_segmentation(text: str) -> list[str]:
    """MLQA's segmentation for Chinese: each CJK ideograph (U+4E00..U+9FA5) and each punctuation
    character is a token of its own; the text between them is split on whitespace."""
    tokens: list[str] = []
    pending = ""
    for ch in text:
        if _CJK.search(ch) or _unicode_punctuation(ch):
            tokens.extend(pending.split())
            pending = ""
            tokens.append(ch)
        else:
            pending += ch
    tokens.extend(pending.split())
    return tokens


SQUAD_NORMALIZER = AnswerNormalizer(
    is_punctuation=_ascii_punctuation,
    articles=re.compile(r"\b(a|an|the)\b"),
    tokenize=_whitespace_tokens,
)

# MLQA's articles per answer language; hi and zh have none. Arabic's pattern in MLQA is
# '\sال^|ال', whose first branch can never match (``^`` after text): every ال becomes a space.
_MLQA_ARTICLES: dict[str, str | None] = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "hi": None,
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": "ال",
    "zh": None,
}

MLQA_NORMALIZERS: Mapping[str, AnswerNormalizer] = {
    language: AnswerNormalizer(
        is_punctuation=_unicode_punctuation,
        articles=re.compile(pattern) if pattern is not None else None,
        tokenize=_mixed_segmentation if language == "zh" else _whitespace_tokens,
    )
    for language, pattern in _MLQA_ARTICLES.items()
}


def answer_f1(predicted: str, gold: str, normalize: AnswerNormalizer) -> float:
    """Token-overlap F1 (0-1) of two normalised answers; 0 when they share no token."""
    predicted_tokens = normalize(predicted).split()
    gold_tokens = normalize(gold).split()
    same = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = 1.0 * same / len(predicted_tokens)
    recall = 1.0 * same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match(predicted: str, gold: str, normalize: AnswerNormalizer) -> bool:
    return normalize(predicted) == normalize(gold)


@dataclass(frozen=True)
class QaQuestion:
    """One gold question: its id and its gold answer texts (at least one)."""

    id: str
    answers: tuple[str, ...]


def qa_scores(
    questions: Sequence[QaQuestion], predictions: Mapping[str, str], normalize: AnswerNormalizer
) -> ExactMatchF1:
    """Exact match and F1 (percent) over ``questions`` (not empty), each the best over its gold
    answers; a question missing from ``predictions`` scores 0 and counts in the total."""
    em_sum: float = 0
    f1_sum: float = 0
    unanswered = 0
    for question in questions:
        if question.id not in predictions:
            unanswered += 1
            continue
        predicted = predictions[question.id]
        em_sum += max(exact_match(predicted, gold, normalize) for gold in question.answers)
        f1_sum += max(answer_f1(predicted, gold, normalize) for gold in question.answers)
    total = len(questions)
    return ExactMatchF1(
        exact_match=100.0 * em_sum / total,
        f1=100.0 * f1_sum / total,
        questions=total,
        unanswered=unanswered,
    )
