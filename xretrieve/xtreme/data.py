"""XTREME's data on disk: where each task's files are, and readers that return the trainer's
example records, so that fine-tuning (English train), prediction (every language's dev and test)
and scoring read the same files the same way.

Layouts, per file (``locate`` picks, ``Layout`` names them):

- ``XTREME``: what XTREME's ``scripts/download_data.sh`` and ``utils_preprocess.py`` leave under
  ``ROOT`` (``ROOT/TASK/...``, the table in ``XTREME_FILES``). Test files of xnli, pawsx, udpos
  and panx hold no labels (``test-LANG.tsv``: two sentences, or one word per line); the QA test
  files (``xquad.LANG.json``, MLQA's test set, TyDi QA's dev files) have their answers replaced by
  an empty one; BUCC's ``test`` (the shared task's training data) has no ``.gold`` and ``dev``
  (its sample) has; Tatoeba's English side is sorted, so its lines are no gold alignment.
- ``HF_JSONL``: a Hugging Face export (``Dataset.to_json``, JSON Lines) of the same data, saved
  with the XTREME file's stem and ``.jsonl`` in the same folder (``xnli/dev-de.jsonl`` for
  ``xnli/dev-de.tsv``, ``tatoeba/de-en.jsonl`` for ``tatoeba/de-en.de``). google/xtreme keeps the
  labels of its test splits, so an export has labels when its first record carries them.
- ``LASER``: Tatoeba as LASER ships it and ``xretrieve evaluate`` reads it,
  ``tatoeba/tatoeba.XXX-eng.{XXX,eng}`` (ISO 639-3), aligned line by line.

Tasks, splits and languages come from ``xretrieve.xtreme.tasks``. XTREME fine-tunes XQuAD and
MLQA on SQuAD v1.1 (their ``train`` split, and xquad's ``dev``, is ``squad/{train,dev}-v1.1.json``)
and TyDiQA-GoldP on the English part of TyDi QA's training data
(``tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.readers import iter_jsonl
from xretrieve.formats.bucc import BuccSplit, bucc_paths, read_bucc_split
from xretrieve.formats.corpus import Corpus, read_text_corpus
from xretrieve.formats.tatoeba import read_tatoeba, tatoeba_paths
from xretrieve.trainer.config import TaskConfig
from xretrieve.trainer.crosslingual import ISO_639_3
from xretrieve.trainer.presets import PRESETS
from xretrieve.trainer.readers import TaskData, get_field, read_task_file
from xretrieve.xtreme.tasks import XtremeTask, task_by_name


class Split(str, enum.Enum):
    TRAIN = "train"
    DEV = "dev"
    TEST = "test"


class Layout(str, enum.Enum):
    """Where a file comes from (see the module docstring)."""

    XTREME = "xtreme"
    HF_JSONL = "hf_jsonl"
    LASER = "laser"


@dataclass(frozen=True)
class TaskFile:
    """One located file of one task, split and language. ``path`` is the file read (BUCC and
    Tatoeba: the non-English side), ``companions`` the other files of the same unit (the English
    side, BUCC's gold when present). ``has_labels``: whether gold comes with it (labels, tags,
    answers, BUCC pairs, an aligned Tatoeba)."""

    task: str
    split: Split
    lang: str
    path: Path
    layout: Layout
    has_labels: bool
    companions: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FileSpec:
    """One split of one task in XTREME's layout: ``pattern`` under the data root (``{lang}``
    filled in), the languages it exists for (None: every language of the task), and whether
    XTREME leaves its labels in."""

    pattern: str
    has_labels: bool
    languages: tuple[str, ...] | None = None


_EN = ("en",)
_SQUAD_TRAIN = FileSpec("squad/train-v1.1.json", True, _EN)
_MLQA = "mlqa/MLQA_V1/{split}/{split}-context-{lang}-question-{lang}.json"

# What download_data.sh + utils_preprocess.py leave, per task and split.
XTREME_FILES: dict[str, dict[Split, FileSpec]] = {
    "xnli": {
        Split.TRAIN: FileSpec("xnli/train-{lang}.tsv", True, _EN),
        Split.DEV: FileSpec("xnli/dev-{lang}.tsv", True),
        Split.TEST: FileSpec("xnli/test-{lang}.tsv", False),
    },
    "pawsx": {
        Split.TRAIN: FileSpec("pawsx/train-{lang}.tsv", True, _EN),
        Split.DEV: FileSpec("pawsx/dev-{lang}.tsv", True),
        Split.TEST: FileSpec("pawsx/test-{lang}.tsv", False),
    },
    "udpos": {
        Split.TRAIN: FileSpec("udpos/train-{lang}.tsv", True),
        Split.DEV: FileSpec("udpos/dev-{lang}.tsv", True),
        Split.TEST: FileSpec("udpos/test-{lang}.tsv", False),
    },
    "panx": {
        Split.TRAIN: FileSpec("panx/train-{lang}.tsv", True),
        Split.DEV: FileSpec("panx/dev-{lang}.tsv", True),
        Split.TEST: FileSpec("panx/test-{lang}.tsv", False),
    },
    "xquad": {
        Split.TRAIN: _SQUAD_TRAIN,
        Split.DEV: FileSpec("squad/dev-v1.1.json", True, _EN),
        Split.TEST: FileSpec("xquad/xquad.{lang}.json", False),
    },
    "mlqa": {
        Split.TRAIN: _SQUAD_TRAIN,
        Split.DEV: FileSpec(_MLQA.replace("{split}", "dev"), True),
        Split.TEST: FileSpec(_MLQA.replace("{split}", "test"), False),
    },
    "tydiqa": {
        # utils_preprocess.py's tydiqa_preprocess splits TyDi QA's train file by language;
        # XTREME fine-tunes TyDiQA-GoldP on its English part (README, scripts/train.sh)
        Split.TRAIN: FileSpec(
            "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json", True, _EN
        ),
        Split.TEST: FileSpec("tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json", False),
    },
    "bucc2018": {
        Split.DEV: FileSpec("bucc2018/{lang}-en.dev.{lang}", True),
        Split.TEST: FileSpec("bucc2018/{lang}-en.test.{lang}", False),
    },
    "tatoeba": {Split.TEST: FileSpec("tatoeba/{lang}-en.{lang}", False)},
}

# The trainer preset that reads each task's files (fine-tuning uses the same).
TASK_PRESETS: dict[str, str] = {
    "xnli": "xnli",
    "pawsx": "pawsx",
    "udpos": "udpos",
    "panx": "panx",
    "xquad": "squad",
    "mlqa": "squad",
    "tydiqa": "squad",
}

# The field of a Hugging Face export's record that holds its gold, per task.
_EXPORT_LABELS: dict[str, tuple[str, ...]] = {
    "xnli": ("gold_label", "label"),
    "pawsx": ("label",),
    "udpos": ("pos_tags",),
    "panx": ("ner_tags",),
    "xquad": ("answers",),
    "mlqa": ("answers",),
    "tydiqa": ("answers",),
    "tatoeba": ("target_sentence",),
}


def _task_spec(task: str, split: Split | str) -> tuple[XtremeTask, Split, FileSpec]:
    info = task_by_name(task)
    try:
        split = Split(split)
    except ValueError:
        raise XRetrieveError(
            f"unknown split {split!r} (known: {', '.join(s.value for s in Split)})"
        ) from None
    specs = XTREME_FILES[info.name]
    if split not in specs:
        raise XRetrieveError(
            f"XTREME has no {split.value} split of {task} "
            f"(it has: {', '.join(s.value for s in specs)})"
        )
    return info, split, specs[split]


def split_languages(task: str, split: Split | str) -> tuple[str, ...]:
    """The languages a split of ``task`` exists for in XTREME's layout."""
    info, _, spec = _task_spec(task, split)
    return spec.languages if spec.languages is not None else info.languages


def locate(
    root: Path | str, task: str, split: Split | str, lang: str, layout: Layout | None = None
) -> TaskFile:
    """The file of ``task``'s ``split`` in ``lang`` under the XTREME data root ``root``: the
    XTREME layout's file, else its Hugging Face export (same stem, ``.jsonl``), else (Tatoeba)
    LASER's aligned files; ``layout`` asks for one of them only. Both an XTREME file and its
    export present is an error (which one is meant?), as is a missing file (naming the paths
    looked for) or a task, split or language XTREME does not have."""
    found = _find(Path(root), task, split, lang, layout)
    if isinstance(found, TaskFile):
        return found
    expected = " or ".join(str(path) for path in found)
    raise InputError(
        found[0],
        f"not found: XTREME's {task} {Split(split).value} file for {lang} is {expected} "
        "(scripts/download_data.sh of google-research/xtreme writes this layout)",
    )


def xtreme_files(root: Path | str, task: str) -> dict[Split, dict[str, TaskFile]]:
    """Every file of ``task`` under ``root``, per split, per language (splits and languages
    without a file are left out)."""
    files: dict[Split, dict[str, TaskFile]] = {}
    for split in XTREME_FILES[task_by_name(task).name]:
        for lang in split_languages(task, split):
            found = _find(Path(root), task, split, lang, None)
            if isinstance(found, TaskFile):
                files.setdefault(split, {})[lang] = found
    return files


def _find(
    root: Path, task: str, split: Split | str, lang: str, layout: Layout | None
) -> TaskFile | list[Path]:
    """The TaskFile, or the paths looked for when there is none."""
    info, split, spec = _task_spec(task, split)
    languages = spec.languages if spec.languages is not None else info.languages
    if lang not in languages:
        raise XRetrieveError(
            f"XTREME's {task} {split.value} split has no language {lang!r} "
            f"(it has: {', '.join(languages)})"
        )
    xtreme = root / spec.pattern.format(lang=lang)
    export = xtreme.with_suffix(".jsonl")
    candidates: list[TaskFile] = []
    if layout in (None, Layout.XTREME) and xtreme.is_file():
        candidates.append(_xtreme_file(root, info.name, split, lang, xtreme, spec))
    if layout in (None, Layout.HF_JSONL) and export.is_file():
        if info.name == "bucc2018":
            raise InputError(
                export,
                "the Hugging Face bucc18 export holds only the gold pairs, not the corpora "
                f"mined from; BUCC needs {xtreme} and its .en side",
            )
        candidates.append(
            TaskFile(info.name, split, lang, export, Layout.HF_JSONL, _export_labels(info, export))
        )
    if len(candidates) == 2:
        raise InputError(
            export, f"both {xtreme} and this Hugging Face export exist; keep the one to read"
        )
    if candidates:
        return candidates[0]
    looked = [xtreme, export]
    if info.name == "tatoeba" and layout in (None, Layout.LASER):
        laser, laser_eng = tatoeba_paths(root, ISO_639_3[lang])
        if laser.is_file():
            return TaskFile(info.name, split, lang, laser, Layout.LASER, True, (laser_eng,))
        looked.append(laser)
    return looked


def _xtreme_file(
    root: Path, task: str, split: Split, lang: str, path: Path, spec: FileSpec
) -> TaskFile:
    if task == "bucc2018":
        _, english, gold = bucc_paths(root, lang, split.value)
        has_gold = gold.is_file()
        return TaskFile(
            task,
            split,
            lang,
            path,
            Layout.XTREME,
            has_gold,
            (english, gold) if has_gold else (english,),
        )
    if task == "tatoeba":
        return TaskFile(task, split, lang, path, Layout.XTREME, False, (path.with_suffix(".en"),))
    return TaskFile(task, split, lang, path, Layout.XTREME, spec.has_labels)


def _export_labels(info: XtremeTask, path: Path) -> bool:
    """Whether an export's first record carries its gold (a label, tags, a non-empty answer)."""
    first = next(iter_jsonl(path), None)
    if first is None:
        raise InputError(path, "empty file")
    line, record = first
    for name in _EXPORT_LABELS[info.name]:
        if name in record:
            value = get_field(record, name, path, line)
            if name == "answers" and isinstance(value, dict):
                return any(isinstance(t, str) and t for t in value.get("text") or ())
            if name == "answers" and isinstance(value, list):
                return any(isinstance(a, dict) and a.get("text") for a in value)
            return value not in (None, "", [])
    return False


def task_config(task_file: TaskFile) -> TaskConfig:
    """The trainer task that reads ``task_file`` (its preset; the language it was located for),
    as a fine-tuning config on the same file would."""
    preset = TASK_PRESETS.get(task_file.task)
    if preset is None:
        raise XRetrieveError(
            f"{task_file.task} files are sentence collections: read them with read_bucc or "
            "read_tatoeba"
        )
    return TaskConfig(
        name=task_file.task,
        type=PRESETS[preset].type,
        train_files=(task_file.path,),
        preset=preset,
        language=task_file.lang,
    )


def read_examples(
    task_file: TaskFile, labels: tuple[str, ...] | None = None, limit: int | None = None
) -> TaskData:
    """The examples of one located file as the trainer's records (``PairExample``,
    ``TagExample``, ``QAExample``), read by the task's preset: with their labels when the file
    has them, else for prediction (labels None, no answers). ``labels`` defaults to the
    preset's label set."""
    config = task_config(task_file)
    fixed = labels if labels is not None else PRESETS[config.preset or ""].labels
    return read_task_file(
        config, task_file.path, fixed, limit, language=task_file.lang, labelled=task_file.has_labels
    )


def read_bucc(task_file: TaskFile) -> BuccSplit:
    """BUCC 2018 ``{lang}-en.{split}.{lang,en}`` (and ``.gold`` when present), through
    ``xretrieve.formats.bucc``."""
    if task_file.task != "bucc2018":
        raise XRetrieveError(f"read_bucc reads bucc2018 files, not {task_file.task}")
    root = task_file.path.parent.parent
    return read_bucc_split(root, task_file.lang, task_file.split.value)


@dataclass(frozen=True)
class TatoebaSides:
    """The two sides of one Tatoeba language: ``src`` in ``lang``, ``eng`` English. ``aligned``:
    line ``i`` of ``src`` translates line ``i`` of ``eng`` (LASER's files, the Hugging Face
    export). XTREME's own files sort the English side: no gold here, and a prediction is the
    index of a line of that sorted file, as XTREME's submission expects."""

    lang: str
    src: Corpus
    eng: Corpus
    aligned: bool


def read_tatoeba_sides(task_file: TaskFile) -> TatoebaSides:
    """Both sides of a located Tatoeba file, in whichever layout it has."""
    if task_file.task != "tatoeba":
        raise XRetrieveError(f"read_tatoeba_sides reads tatoeba files, not {task_file.task}")
    if task_file.layout is Layout.LASER:
        pair = read_tatoeba(task_file.path.parent.parent, ISO_639_3[task_file.lang])
        return TatoebaSides(task_file.lang, pair.src, pair.eng, True)
    if task_file.layout is Layout.HF_JSONL:
        return _tatoeba_export(task_file)
    src = read_text_corpus(task_file.path)
    eng = read_text_corpus(task_file.companions[0])
    if len(src) != len(eng):
        raise InputError(eng.path, f"has {len(eng)} lines but {src.path} has {len(src)}")
    return TatoebaSides(task_file.lang, src, eng, False)


def _tatoeba_export(task_file: TaskFile) -> TatoebaSides:
    """google/xtreme ``tatoeba.XXX``: ``source_sentence`` (the language), ``target_sentence``
    (English), aligned; the line break its dataset script leaves at the end of each is removed."""
    path = task_file.path
    sources: list[str] = []
    targets: list[str] = []
    for line, record in iter_jsonl(path):
        for name, into in (("source_sentence", sources), ("target_sentence", targets)):
            value = get_field(record, name, path, line)
            if not isinstance(value, str):
                raise InputError(path, f"field '{name}' must be a string", line)
            into.append(value.rstrip("\r\n"))
    if not sources:
        raise InputError(path, "empty file")
    return TatoebaSides(
        task_file.lang, Corpus(path, tuple(sources)), Corpus(path, tuple(targets)), True
    )
