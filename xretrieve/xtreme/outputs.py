"""What ``xtreme run`` and ``xtreme predict`` write, where, and how they recognise their own
output folder (the ``OutputOwner`` of the shared output guard).

A run folder (``RUN_OUTPUT``)::

    xtreme_run.json                 what the run is: checkpoints, tasks, preset, protocol
    units/CKPT/TASK/seed-S/         one unit (a retrieval task: units/CKPT/TASK/)
        unit.json                   its record, written last: fingerprint, selection, scores
        model/                      the fine-tuned, selected target checkpoint (no optimizer)
        train/                      the trainer's folder while the unit trains
        runner/                     an extra task's runner's folder while the unit runs
        predictions/{dev,test}/TASK/test-LANG.tsv|json
    labels/{dev,test}/TASK/test-LANG.tsv|json    gold of every labelled split, from the data
    submissions/CKPT/seed-S/{dev,test}/TASK/...  every task's predictions of one checkpoint
    grid.md, grid.json, plots/*.png

A predict folder (``PREDICT_OUTPUT``): ``predict.json``, ``predictions/``, ``labels/``.

Prediction and label files are in XTREME's submission layout (``xretrieve xtreme score`` reads
both): one label per line (classification, Tatoeba's line index), one tag per line and a blank
line after each sentence (tagging), ``src_id<TAB>en_id`` lines (BUCC), ``{id: answer}`` JSON
(QA predictions) and SQuAD's JSON layout (QA gold)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.outputs import OutputOwner
from xretrieve.core.readers import read_json_object

RUN_FILE = "xtreme_run.json"
UNITS_DIR = "units"
LABELS_DIR = "labels"
SUBMISSIONS_DIR = "submissions"
PLOTS_DIR = "plots"
GRID_MD = "grid.md"
GRID_JSON = "grid.json"
UNIT_FILE = "unit.json"
PENDING_FILE = "pending.json"
MODEL_DIR = "model"
TRAIN_DIR = "train"
RUNNER_DIR = "runner"
PREDICTIONS_DIR = "predictions"
PREDICT_FILE = "predict.json"
RUN_FORMAT = "xretrieve-xtreme-run/1"
PREDICT_FORMAT = "xretrieve-xtreme-predict/1"

_RUN_ENTRIES = {RUN_FILE, UNITS_DIR, LABELS_DIR, SUBMISSIONS_DIR, PLOTS_DIR, GRID_MD, GRID_JSON}
_PREDICT_ENTRIES = {PREDICT_FILE, PREDICTIONS_DIR, LABELS_DIR}


def _format_of(path: Path) -> str | None:
    payload = read_json(path)
    return payload.get("format") if payload is not None else None


def _disowns(
    directory: Path, manifest: str, fmt: str, entries: set[str], command: str
) -> str | None:
    if _format_of(Path(directory) / manifest) != fmt:
        return f"no {manifest} of {command}"
    foreign = sorted(
        entry.name
        for entry in Path(directory).iterdir()
        if entry.name not in entries
        and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        return f"it also holds {shown}, which {command} does not write"
    return None


def run_disowns(directory: Path) -> str | None:
    """None when ``directory`` is an earlier ``xtreme run`` output (its ``xtreme_run.json``)
    holding only what the run writes; else why not."""
    return _disowns(directory, RUN_FILE, RUN_FORMAT, _RUN_ENTRIES, "xtreme run")


def predict_disowns(directory: Path) -> str | None:
    """None when ``directory`` is an earlier ``xtreme predict`` output; else why not."""
    return _disowns(directory, PREDICT_FILE, PREDICT_FORMAT, _PREDICT_ENTRIES, "xtreme predict")


RUN_OUTPUT = OutputOwner("xtreme run", run_disowns)
PREDICT_OUTPUT = OutputOwner("xtreme predict", predict_disowns)


def write_json(path: Path, payload: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object of ``path`` (a record or manifest this package wrote), or None when it
    is missing, unreadable or no object: the caller then treats it as absent."""
    try:
        return read_json_object(path)
    except InputError:
        return None


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """One value per line (labels, Tatoeba indices, BUCC ``src<TAB>tgt`` pairs)."""
    with atomic_write(path) as handle:
        for line in lines:
            handle.write(f"{line}\n")


def write_sentences(path: Path, sentences: Sequence[Sequence[str]]) -> None:
    """One tag per line, a blank line after each sentence (XTREME's tagging files)."""
    with atomic_write(path) as handle:
        for sentence in sentences:
            handle.write("".join(f"{tag}\n" for tag in sentence))
            handle.write("\n")


def write_answers(path: Path, answers: Mapping[str, str]) -> None:
    """``{question id: answer text}`` (XTREME's QA predictions)."""
    write_json(path, dict(answers))


def write_squad_gold(
    path: Path, questions: Sequence[tuple[str, str, str, Sequence[tuple[str, int]]]]
) -> None:
    """SQuAD v1.1's layout, one paragraph per question ``(id, question, context, answers)``
    with answers ``(text, start)``: what ``xtreme score`` reads as QA gold."""
    data = [
        {
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {
                            "id": qid,
                            "question": question,
                            "answers": [{"text": t, "answer_start": s} for t, s in answers],
                        }
                    ],
                }
            ]
        }
        for qid, question, context, answers in questions
    ]
    write_json(path, {"version": "1.1", "data": data})
