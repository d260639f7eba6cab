"""Every task metric of xretrieve, once, in percent: what the trainer validates with and what
``xretrieve xtreme score`` scores with (the semantics of XTREME's ``evaluate.py``, Hu et al.
2020), so that a fine-tuned checkpoint is selected on the metric it is reported with.

- ``accuracy``: equal entries of two sequences (labels, stripped lines, word tags).
- ``span_f1``: seqeval's chunk precision / recall / F1 (XTREME's metric for PAN-X and UD-POS).
- ``pair_f1``: F1 of two sets of pairs (BUCC).
- ``qa_scores``: exact match and F1 of answer strings, normalised as SQuAD v1.1's script does
  (``SQUAD_NORMALIZER``) or as MLQA's does per answer language (``MLQA_NORMALIZERS``); with
  ``unanswerable`` the SQuAD v2.0 rule for questions without an answer.
- ``recall_at_1``: the share of rows whose best column is a positive (image-text validation).

Inputs are already read and checked; nothing here touches a file."""

from __future__ import annotations

import enum
import re
import string
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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
    prediction (scored 0, as the reference does). ``breakdown`` (SQuAD v2.0 data only):
    ``has_ans_exact_match``, ``has_ans_f1``, ``no_ans_exact_match``, ``no_ans_f1``."""

    exact_match: float
    f1: float
    questions: int
    unanswered: int
    breakdown: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {"exact_match": self.exact_match, "f1": self.f1, **self.breakdown}


def accuracy(gold: Sequence, predicted: Sequence) -> float:
    """Percent of positions where ``predicted[i] == gold[i]`` (labels, label ids or stripped
    lines); ``ValueError`` when the lengths differ or there is nothing to score."""
    if len(predicted) != len(gold):
        raise ValueError(f"accuracy of {len(predicted)} predictions against {len(gold)} labels")
    if len(gold) == 0:
        raise ValueError("accuracy of no examples")
    correct = int(np.count_nonzero(np.asarray(predicted) == np.asarray(gold)))
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
    tag ``N`` of type ``OUN``). Sentences pair up one to one, each of one length in both."""
    try:
        from seqeval.metrics import f1_score, precision_score, recall_score
    except ImportError as error:
        raise MissingDependencyError("seqeval", "Scoring tagging tasks") from error

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


class AnswerNormalization(str, enum.Enum):
    """How answers are normalised before they are compared: SQuAD v1.1's script (XQuAD,
    TyDiQA-GoldP, SQuAD itself), or MLQA's per answer language."""

    SQUAD = "squad"
    MLQA = "mlqa"


def answer_normalizer(kind: AnswerNormalization, language: str | None) -> AnswerNormalizer:
    """The normaliser of ``kind`` for answers in ``language`` (MLQA's needs one of
    ``MLQA_NORMALIZERS``; ``ValueError`` otherwise)."""
    if kind is AnswerNormalization.SQUAD:
        return SQUAD_NORMALIZER
    if language not in MLQA_NORMALIZERS:
        raise ValueError(
            f"MLQA's normalisation needs an MLQA language ({', '.join(MLQA_NORMALIZERS)}), "
            f"not {language!r}"
        )
    return MLQA_NORMALIZERS[language]


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lower-case, no ASCII punctuation, no a/an/the, single
    spaces."""
    return SQUAD_NORMALIZER(text)


def answer_f1(
    predicted: str, gold: str, normalize: AnswerNormalizer, *, empty_rule: bool = False
) -> float:
    """Token-overlap F1 (0-1) of two normalised answers; 0 when they share no token. With
    ``empty_rule`` (SQuAD v2.0's script), an empty side scores 1 exactly when both are empty."""
    predicted_tokens = normalize(predicted).split()
    gold_tokens = normalize(gold).split()
    if empty_rule and (not predicted_tokens or not gold_tokens):
        return float(predicted_tokens == gold_tokens)
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
    """One gold question: its id and its gold answer texts (SQuAD v1.1 data: at least one; v2.0
    data: none for an unanswerable question)."""

    id: str
    answers: tuple[str, ...]


def qa_scores(
    questions: Sequence[QaQuestion],
    predictions: Mapping[str, str],
    normalize: AnswerNormalizer,
    *,
    unanswerable: bool = False,
) -> ExactMatchF1:
    """Exact match and F1 (percent) over ``questions`` (not empty), each the best over its gold
    answers; a question missing from ``predictions`` scores 0 and counts in the total.

    ``unanswerable`` (SQuAD v2.0's script): a question whose answers all normalise to nothing
    is unanswerable, and only an empty prediction is right for it; the result then breaks the
    scores down into answerable and unanswerable questions when there are both kinds. Without
    it, SQuAD v1.1's (and XTREME's) semantics."""
    if not questions:
        raise ValueError("qa_scores needs at least one question")
    em: list[float] = []
    f1: list[float] = []
    answerable: list[bool] = []
    unanswered = 0
    for question in questions:
        references = question.answers
        if unanswerable:
            references = tuple(a for a in question.answers if normalize(a)) or ("",)
        answerable.append(references != ("",))
        if question.id not in predictions:
            unanswered += 1
            em.append(0.0)
            f1.append(0.0)
            continue
        predicted = predictions[question.id]
        em.append(max(float(exact_match(predicted, gold, normalize)) for gold in references))
        f1.append(
            max(
                answer_f1(predicted, gold, normalize, empty_rule=unanswerable)
                for gold in references
            )
        )
    total = len(questions)
    breakdown: dict[str, float] = {}
    if unanswerable and not all(answerable):
        for prefix, wanted in (("has_ans", True), ("no_ans", False)):
            rows = [i for i, kind in enumerate(answerable) if kind is wanted]
            if rows:
                breakdown[f"{prefix}_exact_match"] = 100.0 * sum(em[i] for i in rows) / len(rows)
                breakdown[f"{prefix}_f1"] = 100.0 * sum(f1[i] for i in rows) / len(rows)
    return ExactMatchF1(
        exact_match=100.0 * sum(em) / total,
        f1=100.0 * sum(f1) / total,
        questions=total,
        unanswered=unanswered,
        breakdown=breakdown,
    )


def recall_at_1(sims: np.ndarray, positives: np.ndarray) -> float:
    """Percent of rows whose highest-scoring column is a positive; ``sims`` (n, m) float and
    ``positives`` (n, m) bool."""
    best = np.argmax(sims, axis=1)
    return 100.0 * float(np.mean(positives[np.arange(len(best)), best]))
