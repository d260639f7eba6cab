"""The XTREME benchmark as data: its nine tasks (name, group, scoring, languages) and the file
layout of a submission, ``TASK/test-LANG.tsv`` or ``TASK/test-LANG.json``, as XTREME's
``evaluate.py`` (google-research/xtreme) reads it. Order matters: tasks, groups and languages are
listed in the reference's order, which is the key order of its JSON report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from xretrieve.core.errors import XRetrieveError


class Group(str, Enum):
    """XTREME's task groups, in the order of its report."""

    CLASSIFICATION = "classification"
    TAGGING = "tagging"
    QA = "qa"
    RETRIEVAL = "retrieval"


class Scoring(str, Enum):
    """How one language of a task is scored, and so how its files are read.

    - ``ACCURACY``: one label per line (``.tsv``), stripped lines compared (xnli, pawsx, tatoeba).
    - ``SPAN_F1``: one tag per line, a blank line between sentences (``.tsv``); seqeval's
      micro precision/recall/F1 over chunks (panx, udpos).
    - ``PAIR_F1``: one ``src<TAB>tgt`` pair per line (``.tsv``); F1 of the pair sets (BUCC).
    - ``SQUAD``: SQuAD v1.1 exact match and F1 (``.json``) (xquad, tydiqa).
    - ``MLQA``: MLQA's exact match and F1, normalised per answer language (``.json``).
    """

    ACCURACY = "accuracy"
    SPAN_F1 = "span_f1"
    PAIR_F1 = "pair_f1"
    SQUAD = "squad"
    MLQA = "mlqa"

    @property
    def suffix(self) -> str:
        return "json" if self in (Scoring.SQUAD, Scoring.MLQA) else "tsv"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names of one language's score, in the reference's key order."""
        if self is Scoring.ACCURACY:
            return ("accuracy",)
        if self in (Scoring.SPAN_F1, Scoring.PAIR_F1):
            return ("f1", "precision", "recall")
        return ("exact_match", "f1")


@dataclass(frozen=True)
class XtremeTask:
    """One XTREME task: every language in ``languages`` is needed to score it."""

    name: str
    group: Group
    scoring: Scoring
    languages: tuple[str, ...]

    def file_name(self, language: str) -> str:
        return f"test-{language}.{self.scoring.suffix}"

    def path(self, root: Path | str, language: str) -> Path:
        """``ROOT/TASK/test-LANG.SUFFIX``: a prediction file under a submission, or the label
        file under a label folder."""
        return Path(root) / self.name / self.file_name(language)


def _languages(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


# The reference's XTREME_TASK2LANGS, in its order (that of the report's task keys).
TASKS: tuple[XtremeTask, ...] = (
    XtremeTask("pawsx", Group.CLASSIFICATION, Scoring.ACCURACY, _languages("de,en,es,fr,ja,ko,zh")),
    XtremeTask(
        "xnli",
        Group.CLASSIFICATION,
        Scoring.ACCURACY,
        _languages("ar,bg,de,el,en,es,fr,hi,ru,sw,th,tr,ur,vi,zh"),
    ),
    XtremeTask(
        "panx",
        Group.TAGGING,
        Scoring.SPAN_F1,
        _languages(
            "ar,he,vi,id,jv,ms,tl,eu,ml,ta,te,af,nl,en,de,el,bn,hi,mr,ur,fa,fr,"
            "it,pt,es,bg,ru,ja,ka,ko,th,sw,yo,my,zh,kk,tr,et,fi,hu"
        ),
    ),
    XtremeTask(
        "udpos",
        Group.TAGGING,
        Scoring.SPAN_F1,
        _languages(
            "af,ar,bg,de,el,en,es,et,eu,fa,fi,fr,he,hi,hu,id,it,ja,kk,ko,mr,"
            "nl,pt,ru,ta,te,th,tl,tr,ur,vi,yo,zh"
        ),
    ),
    XtremeTask("bucc2018", Group.RETRIEVAL, Scoring.PAIR_F1, _languages("de,fr,ru,zh")),
    XtremeTask(
        "tatoeba",
        Group.RETRIEVAL,
        Scoring.ACCURACY,
        _languages(
            "ar,he,vi,id,jv,tl,eu,ml,ta,te,af,nl,de,el,bn,hi,mr,ur,fa,fr,it,"
            "pt,es,bg,ru,ja,ka,ko,th,sw,zh,kk,tr,et,fi,hu"
        ),
    ),
    XtremeTask("xquad", Group.QA, Scoring.SQUAD, _languages("en,es,de,el,ru,tr,ar,vi,th,zh,hi")),
    XtremeTask("mlqa", Group.QA, Scoring.MLQA, _languages("en,es,de,ar,hi,vi,zh")),
    XtremeTask("tydiqa", Group.QA, Scoring.SQUAD, _languages("en,ar,bn,fi,id,ko,ru,sw,te")),
)

# The reference's XTREME_GROUP2TASK: a group's score is the mean of these tasks' avg_metric,
# summed in this order.
GROUP_TASKS: dict[Group, tuple[str, ...]] = {
    Group.CLASSIFICATION: ("pawsx", "xnli"),
    Group.TAGGING: ("udpos", "panx"),
    Group.QA: ("xquad", "mlqa", "tydiqa"),
    Group.RETRIEVAL: ("bucc2018", "tatoeba"),
}

TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)


def task_by_name(name: str) -> XtremeTask:
    """The task called ``name``; ``XRetrieveError`` naming the known ones otherwise."""
    for task in TASKS:
        if task.name == name:
            return task
    raise XRetrieveError(f"unknown XTREME task {name!r} (known: {', '.join(TASK_NAMES)})")
