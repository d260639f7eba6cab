"""The unit of phase 3, one (checkpoint, target task, seed): the files it reads, the fingerprint
that says whether an earlier result still holds, its record, and the scores of its predictions
(through ``xretrieve.xtreme.score``, the one XTREME scorer).

A unit's fingerprint hashes the checkpoint's content (``content_hash``), the size and sha256 of
every data file the task reads (``data_fingerprint``), the recipe and the seed: a rerun keeps a
finished unit only when all of them are unchanged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.xtreme.data import Split, TaskFile, locate, xtreme_files
from xretrieve.xtreme.score import LanguageScore, TaskScore, score_language, task_score
from xretrieve.xtreme.targets import TargetKind, TargetTask

UNIT_FORMAT = 1
SCORED_SPLITS = (Split.DEV, Split.TEST)


@dataclass(frozen=True)
class TaskFiles:
    """Every located file of one target task: ``train`` (English; fine-tuned tasks), ``select``
    (the labelled English dev file checkpoints are chosen on, if any) and, per split
    (dev, test), the file of each language found. ``extra``: an external task's files."""

    task: str
    train: TaskFile | None = None
    select: TaskFile | None = None
    splits: Mapping[Split, Mapping[str, TaskFile]] = field(default_factory=dict)
    extra: tuple[Path, ...] = ()

    def paths(self) -> list[Path]:
        """Every file the task reads (companions included), each once."""
        found: list[Path] = list(self.extra)
        files = [self.train, *(f for split in self.splits.values() for f in split.values())]
        for task_file in files:
            if task_file is not None:
                found += [task_file.path, *task_file.companions]
        return list(dict.fromkeys(found))

    def languages(self, split: Split) -> tuple[str, ...]:
        return tuple(self.splits.get(split, {}))


def locate_task_files(root: Path, target: TargetTask) -> TaskFiles:
    """The files of ``target`` under the XTREME data folder ``root``. A fine-tuned task needs its
    English training file and, to be predicted, at least one test file; a retrieval task at
    least one test file (BUCC: with its dev file, on which the threshold is tuned). Missing
    languages are left out (and reported as such). An external task's files are those its
    locator returns (read and checked by it)."""
    if target.kind is TargetKind.EXTERNAL:
        return TaskFiles(task=target.name, extra=target.locate_files(root))
    name = target.name
    found = xtreme_files(root, name)
    splits = {split: dict(found.get(split, {})) for split in SCORED_SPLITS if split in found}
    train = locate(root, name, Split.TRAIN, "en") if target.kind is TargetKind.FINE_TUNED else None
    if not splits.get(Split.TEST):
        expected = locate_failure(root, name)
        raise InputError(expected, f"no test file of {name} for any language under {root}")
    if name == "bucc2018":
        without_dev = sorted(set(splits[Split.TEST]) - set(splits.get(Split.DEV, {})))
        if without_dev:
            lang = without_dev[0]
            raise InputError(
                locate_failure(root, name, Split.DEV, lang),
                f"BUCC {lang}: the threshold is tuned on the dev split (with gold), not found",
            )
    select = splits.get(Split.DEV, {}).get("en")
    if select is not None and not select.has_labels:
        select = None
    return TaskFiles(task=name, train=train, select=select, splits=splits)


def locate_failure(
    root: Path, task: str, split: Split = Split.TEST, lang: str | None = None
) -> Path:
    """The path ``locate`` names for a missing file (for messages)."""
    from xretrieve.xtreme.data import XTREME_FILES

    spec = XTREME_FILES[task][split]
    language = lang or (spec.languages[0] if spec.languages else "LANG")
    return Path(root) / spec.pattern.format(lang=language)


def unit_fingerprint(
    task: str, checkpoint_hash: str, data_hash: str, recipe: Mapping[str, Any], seed: int | None
) -> str:
    """What a unit's result depends on, as 16 hex digits."""
    payload = {
        "format": UNIT_FORMAT,
        "task": task,
        "checkpoint": checkpoint_hash,
        "data": data_hash,
        "recipe": recipe,
        "seed": seed,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SplitScores:
    """One split of one unit: per-language scores, the task's averages over the languages
    scored (``task``), and whether every language of the XTREME task was scored."""

    languages: Mapping[str, Mapping[str, float]]
    averages: Mapping[str, float]
    avg_metric: float
    complete: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "languages": {lang: dict(values) for lang, values in self.languages.items()},
            "averages": dict(self.averages),
            "avg_metric": self.avg_metric,
            "complete": self.complete,
        }


def from_task_score(score: TaskScore, complete: bool) -> SplitScores:
    return SplitScores(
        languages={s.language: dict(s.values) for s in score.languages},
        averages=dict(score.averages),
        avg_metric=score.avg_metric,
        complete=complete,
    )


def score_predictions(
    target: TargetTask, predictions_root: Path, labels_root: Path, split: Split
) -> SplitScores | None:
    """Score the languages of ``split`` that have both a prediction file under
    ``predictions_root/SPLIT`` and a label file under ``labels_root/SPLIT`` (None when none
    has), with ``score_language``; averages as ``score_task``'s over those languages."""
    task = target.xtreme
    assert task is not None
    scored: list[LanguageScore] = []
    for lang in task.languages:
        prediction = task.path(predictions_root / split.value, lang)
        label = task.path(labels_root / split.value, lang)
        if prediction.is_file() and label.is_file():
            scored.append(score_language(task, prediction, label, lang))
    if not scored:
        return None
    complete = len(scored) == len(task.languages)
    return from_task_score(task_score(task, scored), complete)


def external_scores(
    target: TargetTask, per_language: Mapping[str, Mapping[str, float]]
) -> SplitScores:
    """An external task's per-language scores as a split's scores: averages of every metric
    over the languages, ``avg_metric`` that of its ``main_metric``."""
    if not per_language:
        raise InputError(None, f"target task {target.name} returned no language scores")
    metrics = sorted({name for values in per_language.values() for name in values})
    averages = {}
    for name in metrics:
        values = [float(v[name]) for v in per_language.values() if name in v]
        averages[f"avg_{name}"] = sum(values) / len(values)
    main = f"avg_{target.main_metric}"
    if main not in averages:
        raise InputError(
            None,
            f"target task {target.name} returned no {target.main_metric!r} (it returned "
            f"{', '.join(metrics)})",
        )
    return SplitScores(
        languages={
            lang: {k: float(v) for k, v in values.items()} for lang, values in per_language.items()
        },
        averages=averages,
        avg_metric=averages[main],
        complete=True,
    )


def language_headline(target: TargetTask, values: Mapping[str, float]) -> float:
    """One language's number as the task's ``avg_metric`` is made: QA the mean of exact match
    and F1, F1 where there is one, else accuracy (an extra task: its main metric)."""
    if target.xtreme is None:
        return float(values[target.main_metric])
    if "exact_match" in values:
        return (values["exact_match"] + values["f1"]) / 2
    return float(values["f1"] if "f1" in values else values["accuracy"])
