"""Readers for training data: JSON Lines (every task; also in a ``.json`` file, as Hugging Face
``datasets.to_json`` writes it), SQuAD-style nested JSON, TSV with a header (GLUE) or without one
(XTREME's ``text_a<TAB>text_b<TAB>label``), CSV with a header (CosmosQA), jiant's
``text<TAB>tags`` TSV, CCGbank AUTO derivations (a file, a folder or a glob of them), CoNLL-style
columns (XTREME's ``word<TAB>tag``; raw PAN-X's ``LANG:token`` prefixes removed), CoNLL-U
(Universal Dependencies: FORM and UPOS of the syntactic words) and plain text, with field-name
presets for the common public releases. The format is detected per file (``detect_format``) and,
within a format, the preset's layout (official release or Hugging Face export) from the file's
first record (``choose_layout``).

A file holding several languages (a ``language`` column, TyDi QA's language-prefixed ids, the
Hugging Face XNLI ``all_languages`` records) is read for one chosen language (``language``; "all"
reads every row); without a choice it is an error listing the languages found, never all rows.
Files without labels (XTREME's test files) are read with ``labelled=False`` only: examples then
carry no label (``PairExample.label`` and ``TagExample.tags`` None, ``QAExample.answers`` empty);
read as training or validation data they are an error.

Readers only parse and check; they return frozen example records. Every problem is an InputError
naming the file and the 1-based line: missing fields, unknown labels, answers that do not occur in
their context, empty files.
"""

from __future__ import annotations

import codecs
import csv
import enum
import glob
import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.readers import iter_jsonl, json_object_with_text
from xretrieve.trainer.config import TaskConfig, TaskType
from xretrieve.trainer.presets import PRESETS, Preset

logger = logging.getLogger(__name__)

ALL_LANGUAGES = "all"


class FileFormat(str, enum.Enum):
    """How one data file is laid out (see ``detect_format``)."""

    JSONL = "jsonl"  # one JSON object per line, whatever the file is called
    SQUAD_JSON = "squad_json"  # the official nested SQuAD document {"data": [...]}
    TSV = "tsv"  # tab-separated with a header row (GLUE); no quoting, as GLUE's loaders read it
    CSV = "csv"  # comma-separated with a header row and standard quoting (CosmosQA)
    TAGS_TSV = "tags_tsv"  # jiant's CCG files: "tokens<TAB>tags", both space-separated
    CCGBANK_AUTO = "ccgbank_auto"  # CCGbank machine-readable derivations; leaves give the tags
    CONLL = "conll"  # whitespace (or tab) columns, blank line between sentences
    CONLLU = "conllu"  # Universal Dependencies: 10 tab-separated columns, comments, ranges
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
    """Sentence(-pair) classification: ``text_b`` is None for single sentences; ``label`` is
    None in a file without labels (read with ``labelled=False``)."""

    text_a: str
    text_b: str | None
    label: int | None


@dataclass(frozen=True)
class ChoiceExample:
    """Multiple choice: each choice is scored against ``context`` (and ``question``)."""

    context: str
    question: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class QAExample:
    """Extractive QA; ``answers`` are (text, character start) pairs, empty when unanswerable (or
    in a file without labels)."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class TagExample:
    """One sentence; ``tags`` is None in a file without labels."""

    words: tuple[str, ...]
    tags: tuple[str, ...] | None


@dataclass(frozen=True)
class ImageTextExample:
    """A caption and the row of its image in the task's gallery (``images.npy``)."""

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
    lines = _head_lines(path, 1)
    return lines[0].strip() if lines else ""


def _head_lines(path: Path, count: int) -> list[str]:
    """The first ``count`` non-blank lines (without a byte-order mark or line break)."""
    lines: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.lstrip("\ufeff").rstrip("\r\n"))
                    if len(lines) >= count:
                        break
    except IsADirectoryError:
        raise InputError(path, "is a folder, expected a data file") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    return lines


_CONLLU_ID = re.compile(r"\d+(?:-\d+|\.\d+)?")


def _looks_like_conllu(lines: list[str]) -> bool:
    """The first line that is no ``#`` comment has CoNLL-U's 10 tab-separated columns and an ID
    (``4``, a multi-word range ``4-5`` or an empty node ``4.1``) first."""
    for line in lines:
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        return len(columns) == 10 and bool(_CONLLU_ID.fullmatch(columns[0]))
    return False


def detect_format(path: Path, task: TaskConfig) -> FileFormat:
    """The layout of one data file, from the preset, its name and its first lines: ``.csv`` is
    CSV; a first line that is a JSON object is JSON Lines whatever the file is called, unless it
    is (the start of) a ``{"data": ...}`` SQuAD document; a tab in the first line is a TSV.
    Tagging: ``.conllu`` or CoNLL-U content (10 tab-separated columns after ``#`` comments) is
    CoNLL-U; ``.auto`` (or a first line ``ID=...``) CCGbank; a tab-separated first line is
    jiant's ``tokens<TAB>tags`` for the ``ccg`` preset, a ``text<TAB>tags`` header or several
    tokens before the tab, else CoNLL columns (one word per line, as XTREME's files); other text
    is CoNLL columns. MLM reads plain text."""
    suffix = path.suffix.lower()
    if task.type is TaskType.MLM:
        return FileFormat.JSONL if suffix == ".jsonl" else FileFormat.TEXT
    if task.type is TaskType.TAGGING:
        return _tagging_format(path, task, suffix)
    if suffix == ".csv":
        return FileFormat.CSV
    first = _first_line(path)
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
        return FileFormat.TSV
    return FileFormat.JSONL


def _tagging_format(path: Path, task: TaskConfig, suffix: str) -> FileFormat:
    preset = PRESETS[task.preset] if task.preset else None
    if suffix == ".conllu":
        return FileFormat.CONLLU
    if suffix == ".csv":
        return FileFormat.CSV
    head = _head_lines(path, 256)
    first = head[0].strip() if head else ""
    if suffix == ".auto" or first.startswith("ID="):
        return FileFormat.CCGBANK_AUTO
    if first.startswith("{"):
        return FileFormat.JSONL
    if _looks_like_conllu(head):
        return FileFormat.CONLLU
    if "\t" in first:
        columns = first.split("\t")
        jiant = task.preset == "ccg" or [c.strip().lower() for c in columns] == ["text", "tags"]
        if jiant or len(columns[0].split()) > 1:
            return FileFormat.TAGS_TSV
        return FileFormat.CONLL
    if (preset is not None and preset.format == "conll") or suffix == ".conll":
        return FileFormat.CONLL
    if first and not first.startswith("["):
        return FileFormat.CONLL
    return FileFormat.JSONL


_GLOB_CHARS = re.compile(r"[*?\[]")


def data_files(path: Path) -> tuple[Path, ...]:
    """The files a task's data path stands for: a file itself; a folder, the CCGbank ``.auto``
    files under it (e.g. ``ccgbank/data/AUTO``, recursively, in path order); a glob pattern
    (``AUTO/0[2-9]/*.auto``, ``**`` recursive), its matching files in path order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.auto") if p.is_file())
        if not files:
            raise InputError(
                path,
                "is a folder without CCGbank .auto files (a folder is read as CCGbank "
                "derivations; name the data file otherwise)",
            )
        return tuple(files)
    if not path.exists() and _GLOB_CHARS.search(str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(path, "no file matches this pattern")
        return tuple(files)
    return (path,)


def read_task_file(
    task: TaskConfig,
    path: Path,
    labels: tuple[str, ...] | None,
    limit: int | None,
    *,
    language: str | None = None,
    labelled: bool = True,
) -> TaskData:
    """Read one data path of ``task`` (a file, or a CCGbank folder or glob: see ``data_files``)
    in whichever format and layout it has. ``labels`` fixes the label set (a validation file is
    read with the training file's labels); ``limit`` keeps the first examples only; ``language``
    (default: the task's) picks one language of a file that holds several; ``labelled=False``
    reads a file without labels (XTREME's test files) for prediction."""
    chosen = task.language if language is None else language
    return _read_files(task, data_files(path), labels, limit, chosen, labelled)


def read_train_files(task: TaskConfig, labels: tuple[str, ...] | None) -> TaskData:
    """Every training file of ``task`` in order, as one TaskData (``max_train_examples`` counts
    over all of them). Later files use the first file's labels, except that tagging without a
    declared tag set takes the union of every file's tags."""
    paths = [file for path in task.train_files for file in data_files(path)]
    return _read_files(task, paths, labels, task.max_train_examples, task.language, True)


def _read_files(
    task: TaskConfig,
    paths: list[Path] | tuple[Path, ...],
    labels: tuple[str, ...] | None,
    limit: int | None,
    language: str | None,
    labelled: bool,
) -> TaskData:
    parts: list[tuple[Path, TaskData]] = []
    for path in paths:
        remaining = None if limit is None else limit - sum(len(d.examples) for _, d in parts)
        if remaining is not None and remaining <= 0:
            break
        fixed = labels
        if fixed is None and parts and task.type is not TaskType.TAGGING:
            fixed = parts[0][1].labels or None
        parts.append((path, _read_one(task, path, fixed, remaining, language, labelled)))
    if len(parts) == 1:
        return parts[0][1]
    examples = tuple(e for _, data in parts for e in data.examples)
    merged_labels = parts[0][1].labels
    extra: dict[str, Any] = dict(parts[0][1].extra)
    if task.type is TaskType.TAGGING and labels is None:
        merged_labels = tuple(sorted({tag for _, data in parts for tag in data.labels}))
    return TaskData(examples, merged_labels, extra)


def _read_one(
    task: TaskConfig,
    path: Path,
    labels: tuple[str, ...] | None,
    limit: int | None,
    language: str | None,
    labelled: bool,
) -> TaskData:
    if task.type is TaskType.IMAGE_TEXT:
        return _read_image_text(path, task, limit)
    preset = PRESETS[task.preset] if task.preset else None
    fmt = detect_format(path, task)
    skipped: list[int] | None = [] if task.skip_malformed else None
    if task.type is TaskType.MLM:
        data = _read_text(path, resolve_fields(task), limit)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.CONLL:
        rows = _conll_sentences(path, resolve_fields(task), labelled)
        data = _read_tags(path, rows, labels, limit, labelled)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.CONLLU:
        data = _read_tags(path, _conllu_sentences(path, labelled), labels, limit, labelled)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.TAGS_TSV:
        data = _read_tags(path, _tags_tsv_sentences(path), labels, limit, labelled)
    elif task.type is TaskType.TAGGING and fmt is FileFormat.CCGBANK_AUTO:
        data = _read_tags(path, _ccgbank_sentences(path), labels, limit, labelled)
    else:
        first, records = _peek(_records(path, fmt, task, labelled, skipped))
        fields = choose_layout(task, first)
        records = _select_language(path, records, language)
        if task.type is TaskType.PAIR_CLASSIFICATION:
            data = _read_pairs(path, records, fields, labels, preset, limit, language, labelled)
        elif task.type is TaskType.MULTIPLE_CHOICE:
            data = _read_choices(path, records, fields, limit)
        elif task.type is TaskType.EXTRACTIVE_QA:
            allow = task.allow_unanswerable
            if allow is None:
                allow = preset.allow_unanswerable if preset else False
            data = _read_qa(path, records, fields, allow, limit, labelled)
        elif task.type is TaskType.TAGGING:
            rows = _tag_records(path, records, fields, task_labels(task), labelled)
            data = _read_tags(path, rows, labels, limit, labelled)
        else:
            raise AssertionError(f"no reader for {task.type}")
    if skipped:
        logger.warning(
            "%s: skipped %d malformed row(s) whose column count differs from the header's "
            "(skip_malformed; first at line %d)",
            path,
            len(skipped),
            skipped[0],
        )
    if not data.examples:
        raise InputError(path, "no examples in file")
    return data


def _peek(
    records: Iterator[tuple[int | None, dict[str, Any]]],
) -> tuple[dict[str, Any] | None, Iterator[tuple[int | None, dict[str, Any]]]]:
    first = next(records, None)
    if first is None:
        return None, iter(())
    return first[1], itertools.chain([first], records)


def _records(
    path: Path, fmt: FileFormat, task: TaskConfig, labelled: bool, skipped: list[int] | None
) -> Iterator[tuple[int | None, dict[str, Any]]]:
    if fmt is FileFormat.SQUAD_JSON:
        return _squad_records(path)
    if fmt is FileFormat.TSV:
        preset = PRESETS[task.preset] if task.preset else None
        if preset is not None and preset.headerless and not _has_header(path, task, preset):
            return _headerless_records(path, preset.headerless, labelled, skipped)
        return iter_table(path, "\t", csv.QUOTE_NONE, skipped)
    if fmt is FileFormat.CSV:
        return iter_table(path, ",", csv.QUOTE_MINIMAL, skipped)
    return iter_jsonl(path)  # type: ignore[return-value]


def _has_header(path: Path, task: TaskConfig, preset: Preset) -> bool:
    """Whether the first row of a TSV names the fields of one of the preset's layouts."""
    first = _first_line(path).split("\t")
    header = {name.strip() for name in first}
    for layout in (preset.fields, *preset.layouts):
        names = _field_names({**layout, **task.fields})
        if all(name.split(".")[0] in header for name in names):
            return True
    return False


def _headerless_records(
    path: Path, names: tuple[str, ...], labelled: bool, skipped: list[int] | None
) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """Rows of XTREME's headerless TSVs (``utils_preprocess.py`` writes them with Python's
    ``csv.writer``, so a field holding a quote is quoted: read with the same quoting, the text
    comes back as it was). The last column, the label, is absent from test files."""
    reader = csv.reader((text for _, text in _utf8_lines(path)), delimiter="\t")
    expected = " <TAB> ".join(names)
    line = 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) == len(names):
                yield start, dict(zip(names, row, strict=True))
            elif len(row) == len(names) - 1 and not labelled:
                yield start, dict(zip(names[:-1], row, strict=True))
            elif len(row) == len(names) - 1:
                raise InputError(
                    path,
                    f"{len(row)} columns, no label (expected {expected}); XTREME's "
                    "test-LANG.tsv files have their labels removed: they are read for "
                    "prediction only (xretrieve.xtreme.data)",
                    start,
                )
            elif skipped is not None:
                skipped.append(start)
            else:
                raise InputError(
                    path, f"expected {len(names)} columns ({expected}), got {len(row)}", start
                )
    except csv.Error as error:
        raise InputError(path, f"malformed row: {error}", reader.line_num) from None


def iter_table(
    path: Path, delimiter: str, quoting: int, skipped: list[int] | None = None
) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """(1-based line, {column: value}) for each row of a delimited file with a header row; a
    row whose column count differs from the header's is an error, or, with ``skipped`` a list,
    skipped and its line appended to it (TFDS's GLUE loaders drop such rows). GLUE's TSVs are
    read with ``csv.QUOTE_NONE`` (quotes are text there), CosmosQA's CSV with standard quoting
    (a quoted field may span lines; the line is where the row starts)."""
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
                if skipped is not None:
                    skipped.append(start)
                    continue
                raise InputError(
                    path,
                    f"expected {len(header)} columns as in the header "
                    f"({', '.join(header[:6])}{', ...' if len(header) > 6 else ''}), "
                    f"got {len(row)} (skip_malformed = true skips such rows)",
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
    value: Any,
    labels: tuple[str, ...],
    name: str,
    path: Path,
    line: int | None,
    aliases: Mapping[str, str] | None = None,
) -> int:
    """Integer labels index the label list; strings must be one of its names (or an alias of
    one: ANLI's ``e`` for ``entailment`` under ``anli_plus``)."""
    if isinstance(value, bool):
        value = str(value).lower()
    if isinstance(value, int):
        if 0 <= value < len(labels):
            return value
        raise InputError(
            path, f"label {value} in field '{name}' is out of range 0..{len(labels) - 1}", line
        )
    if isinstance(value, str) and aliases:
        value = aliases.get(value, value)
    if isinstance(value, str) and value in labels:
        return labels.index(value)
    raise InputError(
        path, f"unknown label {value!r} in field '{name}'; expected one of {list(labels)}", line
    )


Records = Iterable[tuple[int | None, Mapping[str, Any]]]

# TyDi QA ids start with the language's English name ("finnish-123-0"); XTREME's
# utils_preprocess.py splits the GoldP training file by it.
_TYDIQA_LANGUAGES = {
    "arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
    "japanese": "ja", "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te",
    "thai": "th",
}  # fmt: skip
_TYDIQA_ID = re.compile(rf"({'|'.join(_TYDIQA_LANGUAGES)})-")


def _record_language(record: Mapping[str, Any]) -> str | None:
    """The language of one record: its ``language`` field (the official XNLI TSV, the
    google/xtreme XNLI export), or the language named by a TyDi QA id; None when it names none."""
    value = record.get("language")
    if isinstance(value, str) and value:
        return value
    record_id = record.get("id")
    if isinstance(record_id, str):
        match = _TYDIQA_ID.match(record_id)
        if match:
            return _TYDIQA_LANGUAGES[match.group(1)]
    return None


def _select_language(path: Path, records: Records, language: str | None) -> Records:
    """The records of ``language`` in a file that holds several (every record without a
    language passes). Without a choice, a second language is an error listing every language of
    the file; a chosen language the file does not hold is an error listing those it holds;
    ``"all"`` passes every record."""
    seen: set[str] = set()
    iterator = iter(records)
    for line, record in iterator:
        record_language = _record_language(record)
        if record_language is None or language == ALL_LANGUAGES:
            yield line, record
            continue
        seen.add(record_language)
        if language is None and len(seen) > 1:
            seen.update(_record_language(rest) or record_language for _, rest in iterator)
            raise InputError(
                path,
                f"holds {len(seen)} languages ({', '.join(sorted(seen))}); choose one with the "
                'task\'s language = "LANG" (a validation table chooses by its keys), or '
                'language = "all" for every row',
            )
        if language is None or record_language == language:
            yield line, record
    if language not in (None, ALL_LANGUAGES) and seen and language not in seen:
        raise InputError(
            path, f"has no rows in language {language!r}; it holds {', '.join(sorted(seen))}"
        )


def _language_pairs(
    premise: Any, hypothesis: Any, language: str | None, path: Path, line: int | None
) -> list[tuple[str, str]]:
    """Hugging Face XNLI ``all_languages``: ``premise`` a {language: text} mapping,
    ``hypothesis`` {"language": [...], "translation": [...]}; the pair of ``language`` (every
    language's with ``"all"``)."""
    if not isinstance(premise, Mapping) or not all(isinstance(v, str) for v in premise.values()):
        raise InputError(path, "premise must be a {language: text} mapping", line)
    if isinstance(hypothesis, Mapping) and "translation" in hypothesis:
        names, texts = hypothesis.get("language"), hypothesis.get("translation")
        if not isinstance(names, list) or not isinstance(texts, list) or len(names) != len(texts):
            raise InputError(
                path, "hypothesis needs equal-length 'language' and 'translation' lists", line
            )
        hypotheses = dict(zip(names, texts, strict=True))
    elif isinstance(hypothesis, Mapping):
        hypotheses = dict(hypothesis)
    else:
        raise InputError(path, "hypothesis must be per language, like the premise", line)
    languages = [lang for lang in premise if lang in hypotheses]
    if language is None:
        raise InputError(
            path,
            f"each record holds {len(languages)} languages ({', '.join(languages)}); choose one "
            'with the task\'s language = "LANG" (a validation table chooses by its keys)',
            line,
        )
    chosen = languages if language == ALL_LANGUAGES else [language]
    if language != ALL_LANGUAGES and language not in languages:
        raise InputError(
            path, f"record has no {language!r} pair; it holds {', '.join(languages)}", line
        )
    return [
        (
            _text(premise[lang], "premise", path, line),
            _text(hypotheses[lang], "hypothesis", path, line),
        )
        for lang in chosen
    ]


def _read_pairs(
    path: Path,
    records: Records,
    fields: Mapping[str, Any],
    labels: tuple[str, ...] | None,
    preset: Preset | None,
    limit: int | None,
    language: str | None,
    labelled: bool,
) -> TaskData:
    skip_labels = preset.skip_labels if preset else ()
    aliases = preset.label_aliases if preset else None
    raw: list[tuple[str, str | None, Any, int | None]] = []
    single = fields.get("text_b") in (None, "")
    for line, record in records:
        label = get_field(record, fields["label"], path, line) if labelled else None
        if isinstance(label, str | int) and not isinstance(label, bool):
            if str(label) in skip_labels:
                continue
        value_a = get_field(record, fields["text_a"], path, line)
        value_b = None if single else get_field(record, fields["text_b"], path, line)
        if isinstance(value_a, Mapping):
            pairs: list[tuple[str, str | None]] = list(
                _language_pairs(value_a, value_b, language, path, line)
            )
        else:
            text_a = _text(value_a, fields["text_a"], path, line)
            text_b = None if single else _text(value_b, fields["text_b"], path, line)
            pairs = [(text_a, text_b)]
        raw.extend((a, b, label, line) for a, b in pairs)
        if limit is not None and len(raw) >= limit:
            del raw[limit:]
            break
    if labels is None and labelled:
        # Without a declared label set, the sorted labels of the training file define it.
        if any(isinstance(item[2], int) and not isinstance(item[2], bool) for item in raw):
            labels = tuple(str(i) for i in range(max(int(item[2]) for item in raw) + 1))
        else:
            labels = tuple(sorted({str(item[2]) for item in raw}))
    if not labelled or labels is None:
        return TaskData(tuple(PairExample(a, b, None) for a, b, _, _ in raw), labels or ())
    examples = tuple(
        PairExample(a, b, _label_index(label, labels, fields["label"], path, line, aliases))
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
    labelled: bool = True,
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
        answers: tuple[tuple[str, int], ...] = ()
        if labelled:
            answers = _checked_answers(record, fields, qid, context, allow_unanswerable, path, line)
        examples.append(QAExample(qid, question, context, answers))
        if limit is not None and len(examples) >= limit:
            break
    return TaskData(tuple(examples))


def _checked_answers(
    record: Mapping[str, Any],
    fields: Mapping[str, Any],
    qid: str,
    context: str,
    allow_unanswerable: bool,
    path: Path,
    line: int | None,
) -> tuple[tuple[str, int], ...]:
    answers = _answers(get_field(record, fields["answers"], path, line), fields, path, line)
    if record.get("is_impossible"):
        answers = ()
    for text, start in answers:
        if not text:
            raise InputError(
                path,
                f"question {qid} has an empty answer: XTREME removes the answers of its QA "
                "test files (xquad, the mlqa test set, tydiqa's dev files), which are read for "
                "prediction only (xretrieve.xtreme.data)",
                line,
            )
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
    return answers


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
    document, text = json_object_with_text(path)
    if not isinstance(document.get("data"), list):
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


Sentences = Iterable[tuple[tuple[str, ...], tuple[str, ...] | None, int | None]]


def _tag_records(
    path: Path,
    records: Records,
    fields: Mapping[str, Any],
    names: tuple[str, ...] | None,
    labelled: bool,
) -> Sentences:
    for line, record in records:
        words = _word_list(
            get_field(record, fields["words"], path, line), fields["words"], path, line
        )
        if not labelled:
            yield words, None, line
            continue
        value = get_field(record, fields["tags"], path, line)
        yield words, _tag_list(value, fields["tags"], names, path, line), line


def _tag_list(
    value: Any, name: str, names: tuple[str, ...] | None, path: Path, line: int | None
) -> tuple[str, ...]:
    """Tags as strings; integer tags (Hugging Face ClassLabel ids: ``ner_tags``, ``pos_tags``)
    are mapped through the class names, the preset's or the task's ``labels``."""
    if not (isinstance(value, list) and value and all(_is_int(v) for v in value)):
        return _word_list(value, name, path, line)
    if names is None:
        raise InputError(
            path,
            f"field '{name}' holds integer tag ids; name their classes in order with the "
            "task's labels = [...] (or the udpos / panx preset)",
            line,
        )
    bad = [v for v in value if not 0 <= v < len(names)]
    if bad:
        raise InputError(
            path, f"tag id {bad[0]} in field '{name}' is out of range 0..{len(names) - 1}", line
        )
    return tuple(names[v] for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    labelled: bool = True,
) -> TaskData:
    sentences: list[tuple[tuple[str, ...], tuple[str, ...] | None, int | None]] = []
    for words, tags, line in rows:
        if not labelled:
            tags = None
        elif tags is None or len(words) != len(tags):
            raise InputError(path, f"{len(words)} words but {len(tags or ())} tags", line)
        if not words:
            raise InputError(path, "a tagging example needs at least one word", line)
        sentences.append((words, tags, line))
        if limit is not None and len(sentences) >= limit:
            break
    if not labelled:
        examples = tuple(TagExample(words, None) for words, _, _ in sentences)
        return TaskData(examples, labels or (), {"inferred_labels": False})
    inferred = labels is None
    if labels is None:
        labels = tuple(sorted({tag for _, tags, _ in sentences for tag in tags or ()}))
    else:
        known = set(labels)
        for _, tags, line in sentences:
            unknown = [tag for tag in tags or () if tag not in known]
            if unknown:
                raise InputError(
                    path, f"unknown tag {unknown[0]!r}; the task's tags are {list(labels)}", line
                )
    examples = tuple(TagExample(words, tags) for words, tags, _ in sentences)
    return TaskData(examples, labels, {"inferred_labels": inferred})


# Raw PAN-X (WikiANN) prefixes every token with its language: "en:Rick<TAB>B-PER".
_PANX_PREFIX = re.compile(r"([a-z]{2,3}(?:-[a-z]+)*):.")


def _columns(line: str) -> list[str]:
    """A CoNLL line's columns: tab-separated when it has a tab (XTREME's and PAN-X's files),
    else whitespace-separated (CoNLL-2003)."""
    line = line.rstrip()
    return line.split("\t") if "\t" in line else line.split()


def _panx_prefix(lines: list[str]) -> str | None:
    """``LANG:`` when every token of the first sentence carries that prefix (raw PAN-X)."""
    prefixes = set()
    for line in lines:
        if line.startswith("-DOCSTART-"):
            continue
        if not line.strip():
            if prefixes:
                break
            continue
        match = _PANX_PREFIX.match(_columns(line)[0])
        if match is None:
            return None
        prefixes.add(match.group(1))
    return f"{prefixes.pop()}:" if len(prefixes) == 1 else None


def _conll_sentences(
    path: Path, fields: Mapping[str, Any], labelled: bool = True
) -> list[tuple[tuple[str, ...], tuple[str, ...] | None, int | None]]:
    """Word and tag columns from ``fields`` when they are column numbers, else first and last.
    A file whose tokens carry raw PAN-X's ``LANG:`` prefix is read without it (as XTREME's
    ``utils_preprocess.py`` does). A line without a tag column (XTREME's test files) is an
    error unless ``labelled`` is false; a tag with spaces in it is jiant's ``tokens<TAB>tags``."""
    word_col, tag_col = 0, -1
    if re.fullmatch(r"-?\d+", str(fields.get("words", ""))) and re.fullmatch(
        r"-?\d+", str(fields.get("tags", ""))
    ):
        word_col, tag_col = int(fields["words"]), int(fields["tags"])
    lines = _read_utf8(path).splitlines()
    prefix = _panx_prefix(lines)
    sentences: list[tuple[tuple[str, ...], tuple[str, ...] | None, int | None]] = []
    words: list[str] = []
    tags: list[str] = []
    start = 1
    for line_no, line in enumerate(lines + [""], start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((tuple(words), tuple(tags) if labelled else None, start))
            words, tags = [], []
            continue
        if not words:
            start = line_no
        columns = _columns(line)
        try:
            word = columns[word_col]
            tag = columns[tag_col] if labelled and len(columns) > 1 else None
        except IndexError:
            raise InputError(
                path, f"expected columns {word_col} and {tag_col}, got {len(columns)}", line_no
            ) from None
        if prefix is not None:
            if not word.startswith(prefix):
                raise InputError(
                    path,
                    f"token {word!r} lacks the {prefix!r} language prefix of the other tokens "
                    "(raw PAN-X: LANG:token<TAB>tag)",
                    line_no,
                )
            word = word[len(prefix) :]
        if labelled and tag is None:
            raise InputError(
                path,
                "a word without a tag column; XTREME's test-LANG.tsv files hold words only "
                "(their tags are removed) and are read for prediction only "
                "(xretrieve.xtreme.data)",
                line_no,
            )
        if tag is not None and (not tag or len(tag.split()) != 1):
            raise InputError(
                path,
                f"tag {tag!r} is not one tag; jiant's 'tokens<TAB>tags' files need the ccg preset",
                line_no,
            )
        words.append(word)
        tags.append(tag or "")
    return sentences


def _conllu_sentences(path: Path, labelled: bool = True) -> Sentences:
    """Universal Dependencies CoNLL-U: the FORM and UPOS of each syntactic word. ``#`` comment
    lines, multi-word token ranges (``4-5 zum``: their words ``zu``, ``dem`` follow) and empty
    nodes (``5.1``) are skipped; word ids must run 1, 2, 3, ... Sentences whose every FORM is
    ``_`` (treebanks distributed without their text) are skipped and counted."""
    words: list[str] = []
    tags: list[str] = []
    start = 1
    withheld = read = 0
    for line_no, line in itertools.chain(_text_lines(path), [(0, "")]):
        if not line.strip():
            if words and all(word == "_" for word in words):
                withheld += 1
            elif words:
                read += 1
                yield tuple(words), tuple(tags) if labelled else None, start
            words, tags = [], []
            continue
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 10 or not _CONLLU_ID.fullmatch(columns[0]):
            raise InputError(
                path,
                f"expected a CoNLL-U word line (10 tab-separated columns, ID FORM LEMMA UPOS "
                f"...), got {len(columns)} column(s)",
                line_no,
            )
        if not columns[0].isdigit():
            continue
        if int(columns[0]) != len(words) + 1:
            raise InputError(
                path, f"word id {columns[0]} out of sequence (expected {len(words) + 1})", line_no
            )
        if not words:
            start = line_no
        words.append(columns[1])
        tags.append(columns[3])
    if withheld:
        logger.warning(
            "%s: skipped %d sentence(s) whose FORM column is '_' everywhere", path, withheld
        )
    if withheld and not read:
        raise InputError(
            path,
            "every sentence's FORM column is '_': this treebank is distributed without its "
            "text (restore it with the treebank's own script first)",
        )


def _read_image_text(path: Path, task: TaskConfig, limit: int | None) -> TaskData:
    """Captions of the image-text layout (``xretrieve.formats.image_text``, the reader
    ``evaluate`` uses too), each resolved to its row of the task's gallery."""
    from xretrieve.formats.image_text import read_captions, read_image_ids

    assert task.image_features is not None  # set when the config is loaded
    fields = resolve_fields(task)
    row_of = {image_id: row for row, image_id in enumerate(read_image_ids(task.image_features))}
    captions = read_captions(
        path,
        row_of,
        caption_field=str(fields["caption"]),
        image_field=str(fields["image_id"]),
        limit=limit,
    )
    examples = tuple(
        ImageTextExample(text, int(row))
        for text, row in zip(captions.texts, captions.images, strict=True)
    )
    return TaskData(examples, extra={"lines": captions.lines})


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
