"""Reading an XTREME submission and its labels the way XTREME's ``evaluate.py`` reads them, and
checking that the two sides line up (the reference fails on a mismatch, or scores garbage; here
each is an ``InputError`` naming the file).

- ``.tsv`` files are read line by line (universal newlines), each line stripped of surrounding
  whitespace; an empty line is an example like any other (``read_submission_lines``).
- Tagging files hold one tag per line; an empty line closes a sentence, even an empty one, and
  the last sentence needs no empty line after it (``read_sentences``).
- QA files are JSON; a top-level object with a ``data`` key stands for that value (SQuAD's
  dataset layout for labels; predictions are ``{question id: answer text}``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.evaluation.metrics import QaQuestion
from xretrieve.xtreme.tasks import TASK_NAMES, XtremeTask, task_by_name


@dataclass(frozen=True)
class TaggedSentences:
    """A tagging file: ``tags[i]`` are the tags of sentence ``i``, which starts on 1-based line
    ``first_lines[i]`` (for messages)."""

    tags: tuple[tuple[str, ...], ...]
    first_lines: tuple[int, ...]


def _open_text(path: Path):
    try:
        return path.open(encoding="utf-8")
    except OSError as error:
        raise InputError(path, f"cannot be read: {error.strerror or error}") from error


def read_submission_lines(path: Path) -> tuple[str, ...]:
    """Every line of ``path``, stripped (``"1 \\n"`` -> ``"1"``, a blank line -> ``""``)."""
    try:
        with _open_text(path) as handle:
            return tuple(line.strip() for line in handle)
    except UnicodeDecodeError as error:
        raise InputError(path, f"is not UTF-8 text ({error.reason})") from error


def read_sentences(path: Path) -> TaggedSentences:
    """TaggedSentences of tags: non-empty stripped lines accumulate, each empty line ends a sentence
    (two empty lines in a row make an empty sentence, as in the reference)."""
    sentences: list[tuple[str, ...]] = []
    first_lines: list[int] = []
    current: list[str] = []
    start = 1
    for number, line in enumerate(read_submission_lines(path), start=1):
        if line:
            current.append(line)
            continue
        sentences.append(tuple(current))
        first_lines.append(start)
        current = []
        start = number + 1
    if current:
        sentences.append(tuple(current))
        first_lines.append(start)
    return TaggedSentences(tags=tuple(sentences), first_lines=tuple(first_lines))


def _read_json(path: Path) -> Any:
    try:
        with _open_text(path) as handle:
            payload = json.load(handle)
    except UnicodeDecodeError as error:
        raise InputError(path, f"is not UTF-8 text ({error.reason})") from error
    except json.JSONDecodeError as error:
        raise InputError(path, f"is not valid JSON: {error.msg}", line=error.lineno) from error
    if isinstance(payload, dict) and "data" in payload:
        return payload["data"]
    return payload


def _field(path: Path, record: Any, key: str, kind: type, where: str) -> Any:
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, kind):
        expected = {list: "a list", str: "a string"}.get(kind, kind.__name__)
        raise InputError(path, f"{where}: expected '{key}' to be {expected}")
    return value


def read_qa_questions(path: Path) -> tuple[QaQuestion, ...]:
    """The gold questions of a SQuAD-layout file (``{"data": [article, ...]}`` or the list of
    articles itself), in file order. Answers stay as given: a question with no gold answer fails
    only when it is answered (``check_answerable``)."""
    articles = _read_json(path)
    if not isinstance(articles, list):
        raise InputError(path, "expected SQuAD's layout: {'data': [{'paragraphs': [...]}, ...]}")
    questions: list[QaQuestion] = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_field(path, article, "paragraphs", list, f"article {a}")):
            where = f"article {a}, paragraph {p}"
            for qa in _field(path, paragraph, "qas", list, where):
                qa_id = _field(path, qa, "id", str, f"{where}, a question")
                answers = _field(path, qa, "answers", list, f"question {qa_id}")
                texts = tuple(
                    _field(path, answer, "text", str, f"question {qa_id}, an answer")
                    for answer in answers
                )
                questions.append(QaQuestion(id=qa_id, answers=texts))
    return tuple(questions)


def read_qa_predictions(path: Path) -> Mapping[str, Any]:
    """``{question id: answer text}`` (values checked where they are scored)."""
    predictions = _read_json(path)
    if not isinstance(predictions, dict):
        raise InputError(path, "expected a JSON object {question id: answer text}")
    return predictions


def check_answers(
    questions: Sequence[QaQuestion],
    predictions: Mapping[str, Any],
    prediction_file: Path,
    label_file: Path,
) -> None:
    """There are questions, and every answered one has a string answer and at least one gold
    answer (the reference fails on each); questions not answered need neither."""
    if not questions:
        raise InputError(label_file, "has no questions to score")
    for question in questions:
        if question.id not in predictions:
            continue
        if not isinstance(predictions[question.id], str):
            raise InputError(prediction_file, f"answer to {question.id!r} is not a string")
        if not question.answers:
            raise InputError(label_file, f"question {question.id!r} has no gold answer")


def check_same_length(
    predicted: Sequence[Any],
    gold: Sequence[Any],
    prediction_file: Path,
    label_file: Path,
    what: str,
) -> None:
    """As many ``what`` (lines, sentences) in the predictions as in the labels, and at least
    one (nothing to score is an error in the reference: a division by zero)."""
    if len(predicted) != len(gold):
        raise InputError(
            prediction_file, f"has {len(predicted)} {what} but {label_file} has {len(gold)}"
        )
    if not gold:
        raise InputError(label_file, f"has no {what} to score")


def check_aligned_sentences(
    predicted: TaggedSentences, gold: TaggedSentences, prediction_file: Path, label_file: Path
) -> None:
    """Same number of sentences, each with as many tags on both sides (seqeval's requirement)."""
    check_same_length(predicted.tags, gold.tags, prediction_file, label_file, "sentences")
    for index, (tags, gold_tags) in enumerate(zip(predicted.tags, gold.tags, strict=True)):
        if len(tags) != len(gold_tags):
            raise InputError(
                prediction_file,
                f"sentence {index + 1} has {len(tags)} tags but sentence {index + 1} of "
                f"{label_file} (line {gold.first_lines[index]}) has {len(gold_tags)}",
                line=predicted.first_lines[index],
            )


def language_files(
    task: XtremeTask, predictions_dir: Path, labels_dir: Path, language: str
) -> tuple[Path, Path]:
    """``(prediction file, label file)`` of one language; both must exist (the reference stops
    on the first missing one, predictions checked first)."""
    prediction_file = task.path(predictions_dir, language)
    label_file = task.path(labels_dir, language)
    for path in (prediction_file, label_file):
        if not path.is_file():
            raise InputError(
                path, f"not found: {task.name} needs test-LANG files for {len(task.languages)} "
                f"languages ({', '.join(task.languages)})"
            )  # fmt: skip
    return prediction_file, label_file


def find_tasks(
    predictions_dir: Path, labels_dir: Path, names: Sequence[str] | None = None
) -> tuple[XtremeTask, ...]:
    """The tasks to score, in XTREME's order: those named (each folder must exist on both
    sides), or else every task with a folder on both sides, as the reference picks them."""
    for root, option in ((predictions_dir, "predictions"), (labels_dir, "labels")):
        if not root.is_dir():
            raise InputError(root, f"--{option}: not a directory")
    if isinstance(names, str):
        names = (names,)
    if names is not None:
        wanted = {task_by_name(name).name for name in names}
        for name in sorted(wanted, key=TASK_NAMES.index):
            for root in (predictions_dir, labels_dir):
                if not (root / name).is_dir():
                    raise InputError(root / name, "not found (a task folder of the submission)")
    else:
        wanted = {
            name
            for name in TASK_NAMES
            if (predictions_dir / name).is_dir() and (labels_dir / name).is_dir()
        }
    if not wanted:
        raise InputError(
            predictions_dir,
            f"no XTREME task folder ({', '.join(TASK_NAMES)}) here and in {labels_dir}",
        )
    return tuple(task_by_name(name) for name in TASK_NAMES if name in wanted)
