"""Score an XTREME submission as XTREME's ``evaluate.py`` does: every language of each task, the
per-task averages over languages (``avg_METRIC``) and ``avg_metric`` (QA: the mean of exact match
and F1; else F1 or accuracy), a group's score when all its tasks are scored (the mean of their
``avg_metric``), and ``all_task`` when all nine are. Values are percentages, unrounded."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xretrieve.evaluation.metrics import (
    MLQA_NORMALIZERS,
    SQUAD_NORMALIZER,
    accuracy,
    pair_f1,
    qa_scores,
    span_f1,
)
from xretrieve.xtreme.submission import (
    check_aligned_sentences,
    check_answers,
    check_same_length,
    find_tasks,
    language_files,
    read_qa_predictions,
    read_qa_questions,
    read_sentences,
    read_submission_lines,
)
from xretrieve.xtreme.tasks import GROUP_TASKS, TASKS, Group, Scoring, XtremeTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanguageScore:
    """One language of one task: metric name -> percent, in the reference's key order."""

    language: str
    values: Mapping[str, float]


@dataclass(frozen=True)
class TaskScore:
    """One task over all its languages. ``averages`` maps ``avg_METRIC`` to the mean over the
    languages; ``avg_metric`` is the task's headline number."""

    task: XtremeTask
    languages: tuple[LanguageScore, ...]
    averages: Mapping[str, float]
    avg_metric: float

    def to_json(self) -> dict[str, Any]:
        """``{METRIC: {LANG: value}, ..., "avg_METRIC": ..., "avg_metric": ...}``."""
        payload: dict[str, Any] = {
            metric: {score.language: score.values[metric] for score in self.languages}
            for metric in self.task.scoring.metrics
        }
        payload.update(self.averages)
        payload["avg_metric"] = self.avg_metric
        return payload


@dataclass(frozen=True)
class XtremeScores:
    """A scored submission: the tasks found, in XTREME's order; ``groups`` holds the groups all
    of whose tasks were scored; ``all_task`` is set when every task was."""

    tasks: tuple[TaskScore, ...]
    groups: Mapping[Group, float]
    all_task: float | None

    def task(self, name: str) -> TaskScore:
        return next(score for score in self.tasks if score.task.name == name)

    def to_json(self) -> dict[str, Any]:
        """The structure of the reference's ``--output_file``: ``all_task`` (when present), the
        group scores, then one object per task."""
        payload: dict[str, Any] = {}
        if self.all_task is not None:
            payload["all_task"] = self.all_task
        for group, value in self.groups.items():
            payload[group.value] = value
        for score in self.tasks:
            payload[score.task.name] = score.to_json()
        return payload


def score_language(
    task: XtremeTask, prediction_file: Path, label_file: Path, language: str
) -> LanguageScore:
    """Read and check one language's pair of files, then score them by ``task.scoring``."""
    scoring = task.scoring
    if scoring is Scoring.SPAN_F1:
        predicted_tags = read_sentences(prediction_file)
        gold_tags = read_sentences(label_file)
        check_aligned_sentences(predicted_tags, gold_tags, prediction_file, label_file)
        values = span_f1(gold_tags.tags, predicted_tags.tags).as_dict()
    elif scoring in (Scoring.SQUAD, Scoring.MLQA):
        predictions = read_qa_predictions(prediction_file)
        questions = read_qa_questions(label_file)
        check_answers(questions, predictions, prediction_file, label_file)
        normalize = SQUAD_NORMALIZER if scoring is Scoring.SQUAD else MLQA_NORMALIZERS[language]
        result = qa_scores(questions, predictions, normalize)
        if result.unanswered:
            logger.warning(
                "%s: %d of %d questions unanswered (each scored 0)",
                prediction_file,
                result.unanswered,
                result.questions,
            )
        values = result.as_dict()
    else:
        predicted_lines = read_submission_lines(prediction_file)
        gold_lines = read_submission_lines(label_file)
        if scoring is Scoring.PAIR_F1:
            values = pair_f1(gold_lines, predicted_lines).as_dict()
        else:
            check_same_length(predicted_lines, gold_lines, prediction_file, label_file, "lines")
            values = {"accuracy": accuracy(gold_lines, predicted_lines)}
    return LanguageScore(language=language, values=values)


def score_task(task: XtremeTask, predictions_dir: Path, labels_dir: Path) -> TaskScore:
    """Every language of ``task`` (all are needed), averaged over languages."""
    languages = tuple(
        score_language(task, *language_files(task, predictions_dir, labels_dir, lang), lang)
        for lang in task.languages
    )
    return task_score(task, languages)


def task_score(task: XtremeTask, languages: Sequence[LanguageScore]) -> TaskScore:
    """``avg_METRIC`` over ``languages`` (not empty) and the task's ``avg_metric``: for QA the
    mean of exact match and F1, else F1 or accuracy."""
    languages = tuple(languages)
    averages = {
        f"avg_{metric}": sum(score.values[metric] for score in languages) / len(languages)
        for metric in task.scoring.metrics
    }
    if task.group is Group.QA:
        avg_metric = (averages["avg_exact_match"] + averages["avg_f1"]) / 2
    elif "avg_f1" in averages:
        avg_metric = averages["avg_f1"]
    else:
        avg_metric = averages["avg_accuracy"]
    return TaskScore(task=task, languages=languages, averages=averages, avg_metric=avg_metric)


def aggregate(task_scores: Sequence[TaskScore]) -> XtremeScores:
    """Group scores for the groups whose tasks are all in ``task_scores``, and ``all_task``
    when every XTREME task is."""
    by_name = {score.task.name: score.avg_metric for score in task_scores}
    groups = {
        group: sum(by_name[name] for name in names) / len(names)
        for group, names in GROUP_TASKS.items()
        if all(name in by_name for name in names)
    }
    all_task = None
    if all(task.name in by_name for task in TASKS):
        all_task = sum(by_name[task.name] for task in TASKS) / len(TASKS)
    return XtremeScores(tasks=tuple(task_scores), groups=groups, all_task=all_task)


def score_submission(
    predictions_dir: Path | str, labels_dir: Path | str, tasks: Sequence[str] | None = None
) -> XtremeScores:
    """Score ``predictions_dir`` (``TASK/test-LANG.tsv|json``) against ``labels_dir`` (same
    layout) with the semantics of XTREME's ``evaluate.py``. ``tasks``: names to score (each
    folder must exist on both sides); None scores every task with a folder on both sides.

    Raises ``InputError`` naming the file when one is missing, unreadable, or does not line up
    with its label file (line or sentence counts, tags per sentence)."""
    predictions_dir, labels_dir = Path(predictions_dir), Path(labels_dir)
    chosen = find_tasks(predictions_dir, labels_dir, tasks)
    for name in _one_sided(predictions_dir, labels_dir) if tasks is None else ():
        logger.warning("%s has no labels folder %s: not scored", predictions_dir / name, labels_dir)
    return aggregate([score_task(task, predictions_dir, labels_dir) for task in chosen])


def _one_sided(predictions_dir: Path, labels_dir: Path) -> list[str]:
    """XTREME tasks with a predictions folder but no labels folder (skipped, as the reference
    does; worth a warning, unlike labels without predictions, a partial submission)."""
    return [
        task.name
        for task in TASKS
        if (predictions_dir / task.name).is_dir() and not (labels_dir / task.name).is_dir()
    ]
