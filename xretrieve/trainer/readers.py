"""Readers for training data: JSON Lines (every task; also in a ``.json`` file, as Hugging Face
``datasets.to_json`` writes it), SQuAD-style nested JSON, TSV with a header (GLUE), CSV with a
header (CosmosQA), jiant's ``text<TAB>tags`` TSV, CCGbank AUTO derivations, CoNLL-style columns and
plain text, with field-name presets for the common public releases. The format is detected per
file (``detect_format``) and, within a format, the preset's layout (official release or Hugging
Face export) from the file's first record (``choose_layout``).

Readers only parse and check; they return frozen example records. Every problem is an InputError
naming the file and the 1-based line: missing fields, unknown labels, answers that do not occur in
their context, empty files.
"""

from __future__ import annotations

import codecs
import csv
import enum
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xretrieve.errors import InputError
from xretrieve.trainer.config import TaskConfig, TaskType
from xretrieve.trainer.presets import PRESETS


class FileFormat(str, enum.Enum):
    """How one data file is laid out (see ``detect_format``)."""

    JSONL = "jsonl"  # one JSON object per line, whatever the file is called
    SQUAD_JSON = "squad_json"  # the official nested SQuAD document {"data": [...]}
    TSV = "tsv"  # tab-separated with a header row (GLUE); no quoting, as GLUE's loaders read it
    CSV = "csv"  # comma-separated with a header row and standard quoting (CosmosQA)
    TAGS_TSV = "tags_tsv"  # jiant's CCG files: "tokens<TAB>tags", both space-separated
    CCGBANK_AUTO = "ccgbank_auto"  # CCGbank machine-readable derivations; leaves give the tags
    CONLL = "conll"  # whitespace columns, blank line between sentences
    TEXT = "text"  # plain text, one passage per line (MLM)


_DEFAULT_FIELDS: dict[TaskType, dict[str, str | tuple[str, ...]]] = {
    TaskType.PAIR_CLASSIFICATION: {"text_a": "text_a", "text_b": "text_b", "label": "label"},
    TaskType.MULTIPLE_CHOICE: {"context": "context", "choices": "choices", "label": "label"},
    TaskType.EXTRACTIVE_QA: dict(PRESETS["squad"].fields),
    TaskType.TAGGING: {"words": "words", "tags": "tags"},
    TaskType.IMAGE_TEXT: dict(PRESETS["image_text"].fields),
    TaskType.MLM: {"text": "text"},
}


@dataclass(frozen=True)
class PairExample:
    """Sentence(-pair) classification: ``text_b`` is None for single sentences."""

    text_a: str
    text_b: str | None
    label: int


@dataclass(frozen=True)
class ChoiceExample:
    """Multiple choice: each choice is scored against ``context`` (and ``question``)."""

    context: str
    question: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class QAExample:
    """Extractive QA; ``answers`` are (text, character start) pairs, empty when unanswerable."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class TagExample:
    words: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ImageTextExample:
    """A caption and the row of its image in the task's image feature matrix."""

    caption: str
    image: int


@dataclass(frozen=True)
class TextExample:
    text: str


@dataclass(frozen=True)
class TaskData:
    """What a reader returns: the examples and the label names (classification/tagging)."""

    examples: tuple[Any, ...]
    labels: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def resolve_fields(task: TaskConfig) -> dict[str, str | tuple[str, ...]]:
    """The preset's (or the type's default) field names with the task's overrides on top."""
    base = PRESETS[task.preset].fields if task.preset else _DEFAULT_FIELDS[task.type]
    fields = dict(base)
    fields.update(task.fields)
    return fields


def choose_layout(
    task: TaskConfig, first: Mapping[str, Any] | None
) -> dict[str, str | tuple[str, ...]]:
    """The field names for one file: the first of the preset's layouts (official release first,
    then e.g. the Hugging Face export), with the task's overrides on top, whose every field the
    file's ``first`` record has; the preset's own fields when none fits (so that the error names
    the release's field)."""
    preset = PRESETS[task.preset] if task.preset else None
    layouts = [preset.fields, *preset.layouts] if preset else [_DEFAULT_FIELDS[task.type]]
    candidates = [{**layout, **task.fields} for layout in layouts]
    if first is not None:
        for fields in candidates:
            if all(_has_field(first, name) for name in _field_names(fields)):
                return fields
    return candidates[0]


def _field_names(fields: Mapping[str, str | tuple[str, ...]]) -> list[str]:
    names: list[str] = []
    for value in fields.values():
        names += [value] if isinstance(value, str) else list(value)
    return [name for name in names if name]


def _has_field(record: Mapping[str, Any], name: str) -> bool:
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def task_labels(task: TaskConfig) -> tuple[str, ...] | None:
    if task.labels is not None:
        return task.labels
    return PRESETS[task.preset].labels if task.preset else None


def _first_line(path: Path) -> str:
    """The first non-blank line (stripped of a byte-order mark and whitespace), for sniffing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    return line.lstrip("\ufeff").strip()
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    return ""


def detect_format(path: Path, task: TaskConfig) -> FileFormat:
    """The layout of one data file, from the preset, its name and its first line: ``.csv`` is
    CSV, ``.auto`` (or a first line ``ID=...``) CCGbank, ``.conll`` CoNLL columns; a first line
    that is a JSON object is JSON Lines whatever the file is called, unless it is (the start of)
    a ``{"data": ...}`` SQuAD document; a tab in the first line is a TSV (jiant's
    ``text<TAB>tags`` for tagging); otherwise tagging reads CoNLL columns and MLM plain text."""
    preset = PRESETS[task.preset] if task.preset else None
    suffix = path.suffix.lower()
    if task.type is TaskType.MLM:
        return FileFormat.JSONL if suffix == ".jsonl" else FileFormat.TEXT
    tagging = task.type is TaskType.TAGGING
    if tagging and ((preset is not None and preset.format == "conll") or suffix == ".conll"):
        return FileFormat.CONLL
    if suffix == ".csv":
        return FileFormat.CSV
    first = _first_line(path)
    if tagging and (suffix == ".auto" or first.startswith("ID=")):
        return FileFormat.CCGBANK_AUTO
    if first.startswith("{"):
        if task.type is TaskType.EXTRACTIVE_QA:
            try:
                record = json.loads(first)
            except json.JSONDecodeError:
                return FileFormat.SQUAD_JSON  # a pretty-printed (multi-line) document
            if isinstance(record, dict) and "data" not in record:
                return FileFormat.JSONL
            return FileFormat.SQUAD_JSON
        return FileFormat.JSONL
    if "\t" in first or suffix == ".tsv":
        return FileFormat.TAGS_TSV if tagging else FileFormat.TSV
    if tagging and first and not first.startswith("["):
        return FileFormat.CONLL
    return FileFormat.JSONL


def read_task_file(
    task: TaskConfig, path: Path, labels: tuple[str, ...] | None, limit: int | None
) -> TaskData:
    """Read one data file of ``task`` in whichever format and layout it has. ``labels`` fixes
    the label set (a validation file is read with the training file's labels); ``limit`` keeps
    the first examples only."""
    preset = PRESETS[task.preset] if task.preset else None
    fmt = detect_format(path, task)
    if task.type is TaskType.MLM:
        data = _read_text(path, resolve_fields(task), limit)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.CONLL:
        data = _read_tags(path, _conll_sentences(path, resolve_fields(task)), labels, limit)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.TAGS_TSV:
        data = _read_tags(path, _tags_tsv_sentences(path), labels, limit)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.CCGBANK_AUTO:
        data = _read_tags(path, _ccgbank_sentences(path), labels, limit)
    else:
        first, records = _peek(_records(path, fmt))
        fields = choose_layout(task, first)
        if task.type is TaskType.PAIR_CLASSIFICATION:
            skip = preset.skip_labels if preset else ()
            data = _read_pairs(path, records, fields, labels, skip, limit)
        elif task.type is TaskType.MULTIPLE_CHOICE:
            data = _read_choices(path, records, fields, limit)
        elif task.type is TaskType.EXTRACTIVE_QA:
            allow = task.allow_unanswerable
            if allow is None:
                allow = preset.allow_unanswerable if preset else False
            data = _read_qa(path, records, fields, allow, limit)
        elif task.type is TaskType.TAGGING:
            data = _read_tags(path, _tag_records(path, records, fields), labels, limit)
        else:
            data = _read_image_text(path, records, fields, limit)
    if not data.examples:
        raise InputError(path, "no examples in file")
    return data


def read_train_files(task: TaskConfig, labels: tuple[str, ...] | None) -> TaskData:
    """Every training file of ``task`` in order, as one TaskData (``max_train_examples`` counts
    over all of them). Later files use the first file's labels, except that tagging without a
    declared tag set takes the union of every file's tags."""
    parts: list[tuple[Path, TaskData]] = []
    limit = task.max_train_examples
    for path in task.train_files:
        remaining = None if limit is None else limit - sum(len(d.examples) for _, d in parts)
        if remaining is not None and remaining <= 0:
            break
        fixed = labels
        if fixed is None and parts and task.type is not TaskType.TAGGING:
            fixed = parts[0][1].labels or None
        parts.append((path, read_task_file(task, path, fixed, remaining)))
    if len(parts) == 1:
        return parts[0][1]
    examples = tuple(e for _, data in parts for e in data.examples)
    merged_labels = parts[0][1].labels
    extra: dict[str, Any] = dict(parts[0][1].extra)
    if task.type is TaskType.TAGGING and labels is None:
        merged_labels = tuple(sorted({tag for _, data in parts for tag in data.labels}))
    if task.type is TaskType.IMAGE_TEXT:
        extra = {
            "lines": tuple(line for _, data in parts for line in data.extra.get("lines", ())),
            "paths": tuple(path for path, data in parts for _ in data.examples),
        }
    return TaskData(examples, merged_labels, extra)


def _peek(
    records: Iterator[tuple[int | None, dict[str, Any]]],
) -> tuple[dict[str, Any] | None, Iterator[tuple[int | None, dict[str, Any]]]]:
    first = next(records, None)
    if first is None:
        return None, iter(())
    return first[1], itertools.chain([first], records)


def _records(path: Path, fmt: FileFormat) -> Iterator[tuple[int | None, dict[str, Any]]]:
    if fmt is FileFormat.SQUAD_JSON:
        return _squad_records(path)
    if fmt is FileFormat.TSV:
        return iter_table(path, "\t", csv.QUOTE_NONE)
    if fmt is FileFormat.CSV:
        return iter_table(path, ",", csv.QUOTE_MINIMAL)
    return iter_jsonl(path)  # type: ignore[return-value]


def iter_table(
    path: Path, delimiter: str, quoting: int
) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """(1-based line, {column: value}) for each row of a delimited file with a header row; a
    row whose column count differs from the header's is an error. GLUE's TSVs are read with
    ``csv.QUOTE_NONE`` (quotes are text there), CosmosQA's CSV with standard quoting (a quoted
    field may span lines; the line is where the row starts)."""
    # Lines decoded one by one (see ``_utf8_lines``): invalid UTF-8 names its line, where a
    # text-mode file would decode whole chunks ahead of it.
    reader = csv.reader(
        (text for _, text in _utf8_lines(path)), delimiter=delimiter, quoting=quoting
    )
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        line = reader.line_num + 1
        for row in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(
                    path,
                    f"expected {len(header)} columns as in the header "
                    f"({', '.join(header[:6])}{', ...' if len(header) > 6 else ''}), "
                    f"got {len(row)}",
                    start,
                )
            yield start, dict(zip(header, row, strict=True))
    except csv.Error as error:
        raise InputError(path, f"malformed row: {error}", reader.line_num) from None


def _invalid_utf8(
    path: Path, data: bytes, error: UnicodeDecodeError, first_line: int
) -> InputError:
    line = first_line + data.count(b"\n", 0, error.start)
    return InputError(path, f"invalid UTF-8 ({error.reason}); data files must be UTF-8", line)


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line, text) of a UTF-8 file, line by line, without a byte-order mark at the
    start (Windows editors write one); invalid UTF-8 is an ``InputError`` naming the file and
    line."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _invalid_utf8(path, raw, error, line_no) from None


def _read_utf8(path: Path) -> str:
    """The whole of a UTF-8 file, without a byte-order mark at the start; invalid UTF-8 is an
    ``InputError`` naming the file and line."""
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _invalid_utf8(path, data, error, 1) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line, record) for each non-blank line; invalid UTF-8, bad JSON or a non-object
    is an error naming the line."""
    for line_no, line in _utf8_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(path, f"invalid JSON: {error.msg}", line_no) from None
        if not isinstance(record, dict):
            raise InputError(path, "each line must be a JSON object", line_no)
        yield line_no, record


def get_field(record: Mapping[str, Any], name: str, path: Path, line: int | None) -> Any:
    """The value at dotted ``name`` in ``record``; a missing field is an InputError."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise InputError(path, f"missing field '{name}'", line)
        value = value[part]
    return value


def _text(value: Any, name: str, path: Path, line: int | None) -> str:
    if not isinstance(value, str):
        raise InputError(path, f"field '{name}' must be a string, got {type(value).__name__}", line)
    return value


def _label_index(
    value: Any, labels: tuple[str, ...], name: str, path: Path, line: int | None
) -> int:
    """Integer labels index the label list; strings must be one of its names."""
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, int):
        if 0 <= value < len(labels):
            return value
        raise InputError(
            path, f"label {value} in field '{name}' is out of range 0..{len(labels) - 1}", line
        )
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    raise InputError(
        path, f"unknown label {value!r} in field '{name}'; expected one of {list(labels)}", line
    )


Records = Iterable[tuple[int | None, Mapping[str, Any]]]


def _read_pairs(
    path: Path,
    records: Records,
    fields: Mapping[str, Any],
    labels: tuple[str, ...] | None,
    skip_labels: tuple[str, ...],
    limit: int | None,
) -> TaskData:
    raw: list[tuple[str, str | None, Any, int | None]] = []
    single = fields.get("text_b") in (None, "")
    for line, record in records:
        label = get_field(record, fields["label"], path, line)
        if isinstance(label, str) and label in skip_labels:
            continue
        text_a = _text(
            get_field(record, fields["text_a"], path, line), fields["text_a"], path, line
        )
        text_b = None
        if not single:
            text_b = _text(
                get_field(record, fields["text_b"], path, line), fields["text_b"], path, line
            )
        raw.append((text_a, text_b, label, line))
        if limit is not None and len(raw) >= limit:
            break
    if labels is None:
        # Without a declared label set, the sorted labels of the training file define it.
        if any(isinstance(item[2], int) and not isinstance(item[2], bool) for item in raw):
            labels = tuple(str(i) for i in range(max(int(item[2]) for item in raw) + 1))
        else:
            labels = tuple(sorted({str(item[2]) for item in raw}))
    examples = tuple(
        PairExample(a, b, _label_index(label, labels, fields["label"], path, line))
        for a, b, label, line in raw
    )
    return TaskData(examples, labels)


def _read_choices(
    path: Path, records: Records, fields: Mapping[str, Any], limit: int | None
) -> TaskData:
    examples = []
    for line, record in records:
        context = ""
        if fields.get("context"):
            context = _text(
                get_field(record, fields["context"], path, line), fields["context"], path, line
            )
        question = ""
        if fields.get("question"):
            question = _text(
                get_field(record, fields["question"], path, line), fields["question"], path, line
            )
        choice_field = fields["choices"]
        if isinstance(choice_field, tuple):
            values = [get_field(record, name, path, line) for name in choice_field]
        else:
            values = get_field(record, choice_field, path, line)
            if isinstance(values, Mapping):
                values = _columnar_choices(values, choice_field, path, line)
            if not isinstance(values, list):
                raise InputError(path, f"field '{choice_field}' must be a list of choices", line)
        choice_keys: list[str] = []
        choices: list[str] = []
        for i, value in enumerate(values):
            if isinstance(value, Mapping):  # CommonsenseQA: {"label": "A", "text": "..."}
                choices.append(_text(value.get("text"), f"{choice_field}[{i}].text", path, line))
                choice_keys.append(str(value.get("label", i)))
            else:
                choices.append(_text(value, f"{choice_field}[{i}]", path, line))
                choice_keys.append(str(i))
        if len(choices) < 2:
            raise InputError(path, "a multiple-choice example needs at least two choices", line)
        label = get_field(record, fields["label"], path, line)
        if isinstance(label, str) and label.strip().isdigit() and label not in choice_keys:
            label = int(label)
        if isinstance(label, int) and not isinstance(label, bool):
            index = label if 0 <= label < len(choices) else -1
        else:
            index = choice_keys.index(label) if label in choice_keys else -1
        if index < 0:
            raise InputError(
                path,
                f"label {label!r} in field '{fields['label']}' names none of the "
                f"{len(choices)} choices",
                line,
            )
        examples.append(ChoiceExample(context, question, tuple(choices), index))
        if limit is not None and len(examples) >= limit:
            break
    return TaskData(tuple(examples))


def _columnar_choices(
    value: Mapping[str, Any], name: str, path: Path, line: int | None
) -> list[dict[str, Any]]:
    """Hugging Face's {"label": [...], "text": [...]} as CommonsenseQA's [{"label", "text"}]."""
    texts, keys = value.get("text"), value.get("label")
    if not isinstance(texts, list) or not isinstance(keys, list) or len(texts) != len(keys):
        raise InputError(path, f"field '{name}' needs equal-length 'label' and 'text' lists", line)
    return [{"label": key, "text": text} for key, text in zip(keys, texts, strict=True)]


def _read_qa(
    path: Path,
    records: Records,
    fields: Mapping[str, Any],
    allow_unanswerable: bool,
    limit: int | None,
) -> TaskData:
    examples = []
    for line, record in records:
        qid = str(get_field(record, fields["id"], path, line))
        question = _text(
            get_field(record, fields["question"], path, line), fields["question"], path, line
        )
        context = _text(
            get_field(record, fields["context"], path, line), fields["context"], path, line
        )
        answers = _answers(get_field(record, fields["answers"], path, line), fields, path, line)
        if record.get("is_impossible"):
            answers = ()
        for text, start in answers:
            if context[start : start + len(text)] != text:
                raise InputError(
                    path,
                    f"answer {text!r} of question {qid} does not occur in its context at "
                    f"character {start}",
                    line,
                )
        if not answers and not allow_unanswerable:
            raise InputError(
                path,
                f"question {qid} has no answer; set allow_unanswerable = true (or the "
                "squad_v2 preset) for SQuAD 2.0-style data",
                line,
            )
        examples.append(QAExample(qid, question, context, answers))
        if limit is not None and len(examples) >= limit:
            break
    return TaskData(tuple(examples))


def _answers(
    value: Any, fields: Mapping[str, Any], path: Path, line: int | None
) -> tuple[tuple[str, int], ...]:
    """SQuAD JSON: [{"text", "answer_start"}]; HF export: {"text": [...], "answer_start": [...]}."""
    name = fields["answers"]
    if isinstance(value, Mapping):
        texts, starts = value.get("text"), value.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise InputError(
                path, f"field '{name}' needs equal-length 'text' and 'answer_start' lists", line
            )
        pairs = list(zip(texts, starts, strict=True))
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, Mapping) or "text" not in item or "answer_start" not in item:
                raise InputError(
                    path, f"each entry of '{name}' needs 'text' and 'answer_start'", line
                )
            pairs.append((item["text"], item["answer_start"]))
    else:
        raise InputError(path, f"field '{name}' must be a list or a mapping of answers", line)
    answers = []
    for text, start in pairs:
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise InputError(path, f"bad answer entry {text!r}/{start!r} in '{name}'", line)
        answers.append((text, start))
    return tuple(answers)


def _squad_records(path: Path) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """Flatten the official SQuAD JSON into one record per question; the line of each question
    is found from its id so errors point into pretty-printed files too."""
    text = _read_utf8(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(path, f"invalid JSON: {error.msg}", error.lineno) from None
    if not isinstance(document, Mapping) or not isinstance(document.get("data"), list):
        raise InputError(path, "SQuAD JSON needs a top-level 'data' list")
    for article in document["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            for qa in paragraph.get("qas", []):
                record = dict(qa)
                record["context"] = context
                qid = str(qa.get("id", ""))
                offset = text.find(f'"{qid}"') if qid else -1
                line = text.count("\n", 0, offset) + 1 if offset >= 0 else None
                yield line, record


def _word_list(value: Any, name: str, path: Path, line: int | None) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InputError(path, f"field '{name}' must be a list of strings or a string", line)


Sentences = Iterable[tuple[tuple[str, ...], tuple[str, ...], int | None]]


def _tag_records(path: Path, records: Records, fields: Mapping[str, Any]) -> Sentences:
    for line, record in records:
        words = _word_list(
            get_field(record, fields["words"], path, line), fields["words"], path, line
        )
        tags = _word_list(get_field(record, fields["tags"], path, line), fields["tags"], path, line)
        yield words, tags, line


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line, line without its newline) of a UTF-8 text file (see ``_utf8_lines``)."""
    for line_no, line in _utf8_lines(path):
        yield line_no, line.rstrip("\r\n")


def _tags_tsv_sentences(path: Path) -> Sentences:
    """jiant's CCG layout: ``tokens<TAB>tags`` per sentence, both space-separated, with an
    optional ``text<TAB>tags`` header."""
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise InputError(
                path, f"expected 'tokens<TAB>tags' (2 columns), got {len(columns)}", line_no
            )
        if line_no == 1 and [c.strip().lower() for c in columns] == ["text", "tags"]:
            continue
        yield tuple(columns[0].split()), tuple(columns[1].split()), line_no


# A CCGbank AUTO leaf: (<L category modified_POS original_POS word predicate_argument_category>)
_CCG_LEAF = re.compile(r"\(<L (\S+) \S+ \S+ (\S+) \S+>\)")


def _ccgbank_sentences(path: Path) -> Sentences:
    """CCGbank machine-readable derivations (``wsj_*.auto``): ``ID=...`` lines, each followed by
    one derivation line whose leaves give the words and their supertags, left to right."""
    for line_no, line in _text_lines(path):
        if not line.strip() or line.startswith("ID="):
            continue
        leaves = _CCG_LEAF.findall(line)
        if not leaves:
            raise InputError(
                path,
                "expected a CCGbank derivation with (<L CATEGORY POS POS WORD ...>) leaves",
                line_no,
            )
        yield tuple(word for _, word in leaves), tuple(tag for tag, _ in leaves), line_no


def _read_tags(
    path: Path,
    rows: Sentences,
    labels: tuple[str, ...] | None,
    limit: int | None,
) -> TaskData:
    sentences: list[tuple[tuple[str, ...], tuple[str, ...], int | None]] = []
    for words, tags, line in rows:
        if len(words) != len(tags):
            raise InputError(path, f"{len(words)} words but {len(tags)} tags", line)
        if not words:
            raise InputError(path, "a tagging example needs at least one word", line)
        sentences.append((words, tags, line))
        if limit is not None and len(sentences) >= limit:
            break
    inferred = labels is None
    if labels is None:
        labels = tuple(sorted({tag for _, tags, _ in sentences for tag in tags}))
    else:
        known = set(labels)
        for _, tags, line in sentences:
            unknown = [tag for tag in tags if tag not in known]
            if unknown:
                raise InputError(
                    path, f"unknown tag {unknown[0]!r}; the task's tags are {list(labels)}", line
                )
    examples = tuple(TagExample(words, tags) for words, tags, _ in sentences)
    return TaskData(examples, labels, {"inferred_labels": inferred})


def _conll_sentences(
    path: Path, fields: Mapping[str, Any]
) -> list[tuple[tuple[str, ...], tuple[str, ...], int | None]]:
    """Word and tag columns from ``fields`` when they are column numbers, else first and last."""
    word_col, tag_col = 0, -1
    if re.fullmatch(r"-?\d+", str(fields.get("words", ""))) and re.fullmatch(
        r"-?\d+", str(fields.get("tags", ""))
    ):
        word_col, tag_col = int(fields["words"]), int(fields["tags"])
    sentences: list[tuple[tuple[str, ...], tuple[str, ...], int | None]] = []
    words: list[str] = []
    tags: list[str] = []
    start = 1
    lines = _read_utf8(path).splitlines()
    for line_no, line in enumerate(lines + [""], start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((tuple(words), tuple(tags), start))
            words, tags = [], []
            continue
        if not words:
            start = line_no
        columns = line.split()
        try:
            words.append(columns[word_col])
            tags.append(columns[tag_col])
        except IndexError:
            raise InputError(
                path, f"expected columns {word_col} and {tag_col}, got {len(columns)}", line_no
            ) from None
    return sentences


def _read_image_text(
    path: Path, records: Records, fields: Mapping[str, Any], limit: int | None
) -> TaskData:
    examples = []
    lines = []
    for line, record in records:
        caption = _text(
            get_field(record, fields["caption"], path, line), fields["caption"], path, line
        )
        image = get_field(record, fields["image"], path, line)
        if isinstance(image, bool) or not isinstance(image, int) or image < 0:
            raise InputError(
                path,
                f"field '{fields['image']}' must be a row index (int >= 0), got {image!r}",
                line,
            )
        examples.append(ImageTextExample(caption, image))
        lines.append(line)
        if limit is not None and len(examples) >= limit:
            break
    return TaskData(tuple(examples), extra={"lines": tuple(lines)})


_SPACE = re.compile(r"\s+")


def _read_text(path: Path, fields: Mapping[str, Any], limit: int | None) -> TaskData:
    examples = []
    if path.suffix == ".jsonl":
        for line, record in iter_jsonl(path):
            text = _text(get_field(record, fields["text"], path, line), fields["text"], path, line)
            if text.strip():
                examples.append(TextExample(text))
            if limit is not None and len(examples) >= limit:
                break
        return TaskData(tuple(examples))
    for _, line in _utf8_lines(path):
        text = _SPACE.sub(" ", line).strip()
        if text:
            examples.append(TextExample(text))
        if limit is not None and len(examples) >= limit:
            break
    return TaskData(tuple(examples))


def check_image_rows(path: Path, data: TaskData, n_rows: int) -> None:
    """Every caption's image row must exist in the feature matrix."""
    lines = data.extra.get("lines", ())
    paths = data.extra.get("paths", ())
    for i, example in enumerate(data.examples):
        if example.image >= n_rows:
            raise InputError(
                paths[i] if i < len(paths) else path,
                f"caption refers to image row {example.image} but the feature file has "
                f"{n_rows} rows",
                lines[i] if i < len(lines) else None,
            )
