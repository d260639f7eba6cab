"""Evaluation results on disk: ``results.jsonl`` (append-only while running, compacted at the end),
``results.csv``, and the bootstrap samples behind each confidence interval.

A unit is (model, layer, task, language), the model named by its ``store_id``: the hash of its
weights and of every setting that changes its vectors, so two exports of one checkpoint (fp32
and int8, two poolings) or an export and its checkpoint are two models, never one.

Resuming: a unit is finished when ``results.jsonl`` holds every metric of its task, scored with
the same settings on the same data (``data_hash``, recorded with each row); its rows are
appended in one write and fsync'd after the unit's bootstrap samples are on disk. A torn last
line (a run killed mid-write) is ignored on reading and cut off before the next append.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write, save_npy
from xretrieve.core.readers import iter_jsonl, open_npy

logger = logging.getLogger(__name__)

ERROR_METRIC = "error"


@dataclass(frozen=True)
class ResultRow:
    """One measured number (or one failure, ``metric == "error"``, with ``error`` set).

    ``layer`` is the hidden-state index (0 = embeddings' output, L = last layer); ``value``,
    ``ci_low`` and ``ci_high`` are percent for accuracies, F1 and recalls; ``ci_*`` are None
    where no interval is computed; ``n`` counts what the metric averages over (query pairs,
    gold pairs, captions); ``settings`` identifies the scoring settings (k, margin, mode,
    splits, bootstrap) the row was computed with; ``store_id`` the model's vectors
    (``ModelPlan.store_id``: weights and every setting that changes them) and ``data_hash`` the
    files of the task and language (``fingerprint.data_hash``). Rows of older versions lack the
    last two (None): they are never taken as finished, so their units are scored again."""

    checkpoint: str
    checkpoint_hash: str
    layer: int
    task: str
    lang: str
    metric: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    error: str | None = None
    # ScoringSettings.fingerprint() of the run that scored it (None in rows of older versions).
    settings: str | None = None
    store_id: str | None = None
    data_hash: str | None = None

    @property
    def unit(self) -> tuple[str, int, str, str]:
        """``(store_id, layer, task, lang)`` (the checkpoint hash in rows of older versions)."""
        model = self.store_id if self.store_id is not None else self.checkpoint_hash
        return (model, self.layer, self.task, self.lang)


COLUMNS = tuple(field.name for field in fields(ResultRow))


def row_to_json(row: ResultRow) -> str:
    """One JSON line; a NaN or infinite number becomes null (JSON has neither)."""
    values = {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in asdict(row).items()
    }
    return json.dumps(values, ensure_ascii=False, sort_keys=False, allow_nan=False)


def row_from_dict(payload: dict) -> ResultRow:
    """A ``ResultRow`` from a parsed line; ``KeyError``/``TypeError``/``ValueError`` when malformed."""
    values = {name: payload[name] for name in COLUMNS if name in payload}
    row = ResultRow(**values)
    if not isinstance(row.layer, int) or not isinstance(row.metric, str):
        raise ValueError("bad types")
    return row


class ResultsLog:
    """``results.jsonl`` of one output directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def read(self) -> list[ResultRow]:
        """Every well-formed row in file order; malformed or torn lines are skipped (logged)."""
        if not self.path.exists():
            return []
        rows = []
        for number, record in iter_jsonl(self.path, skip_bad=True):
            try:
                rows.append(row_from_dict(record))
            except (KeyError, TypeError, ValueError):
                logger.warning("%s:%d: ignoring a malformed or torn line", self.path, number)
        return rows

    def append(self, rows: Sequence[ResultRow]) -> None:
        """Append ``rows`` in one write, then flush and fsync."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()
        payload = "".join(row_to_json(row) + "\n" for row in rows).encode("utf-8")
        with self.path.open("ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def _cut_torn_tail(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            data = handle.read()
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            logger.warning("%s: cut a torn last line (%d bytes)", self.path, size - keep)

    def compact(self, order: Callable[[ResultRow], tuple]) -> list[ResultRow]:
        """Rewrite the file atomically with the current rows only, sorted by ``order``: the last
        row of each (unit, metric) wins, and a unit's error rows are dropped once it succeeded."""
        rows = latest_rows(self.read())
        rows.sort(key=order)
        with atomic_write(self.path) as handle:
            handle.writelines(row_to_json(row) + "\n" for row in rows)
        return rows


def latest_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """The last row of each (unit, settings, metric), among the rows scored on the data of the
    unit's last row under those settings (rows of data since changed are superseded); error
    rows of a unit that also has results under the same settings dropped."""
    rows = list(rows)
    last_data = {(*row.unit, row.settings): row.data_hash for row in rows}
    latest: dict[tuple, ResultRow] = {}
    for row in rows:
        if row.data_hash == last_data[(*row.unit, row.settings)]:
            latest[(*row.unit, row.settings, row.metric)] = row
    succeeded = {key[:5] for key, row in latest.items() if row.metric != ERROR_METRIC}
    return [
        row
        for key, row in latest.items()
        if not (row.metric == ERROR_METRIC and key[:5] in succeeded)
    ]


def finished_units(
    rows: Iterable[ResultRow],
    metrics_of: Callable[[str], frozenset[str]],
    settings: str,
    data_hashes: Mapping[tuple[str, str], str],
) -> set[tuple[str, int, str, str]]:
    """Units whose rows scored with ``settings`` (a ``ScoringSettings.fingerprint()``) on the
    data of ``data_hashes[(task, lang)]`` cover every metric ``metrics_of(task)`` names. A unit
    with rows of other data only is logged: its files changed since it was scored."""
    seen: dict[tuple[str, int, str, str], set[str]] = {}
    changed: set[tuple[str, str]] = set()
    for row in rows:
        if row.metric == ERROR_METRIC or row.settings != settings:
            continue
        if row.data_hash != data_hashes.get((row.task, row.lang)):
            if row.data_hash is not None:  # None: a row of an older version, scored again too
                changed.add((row.task, row.lang))
            continue
        seen.setdefault(row.unit, set()).add(row.metric)
    done = {unit for unit, metrics in seen.items() if metrics_of(unit[2]) <= metrics}
    for task, lang in sorted(changed - {(unit[2], unit[3]) for unit in done}):
        if (task, lang) in data_hashes:
            logger.warning(
                "the data of %s/%s changed since it was scored; scoring it again", task, lang
            )
    return done


def write_csv(path: Path | str, rows: Sequence[ResultRow]) -> None:
    """``results.csv``: the columns of ``ResultRow``, empty cells for None."""
    with atomic_write(Path(path)) as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if value is None else value for value in asdict(row).values()])


class SampleStore:
    """Bootstrap samples, ``(resamples,)`` float32 per (unit, metric), under
    ``RESULTS_DIR/bootstrap/<store_id>/layer<L>/<task>.<lang>.<metric>.npy``."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path(self, model: str, layer: int, task: str, lang: str, metric: str) -> Path:
        return self.directory / model / f"layer{layer}" / f"{task}.{lang}.{metric}.npy"

    def save(self, row: ResultRow, samples: np.ndarray) -> None:
        save_npy(self.path(*row.unit, row.metric), np.asarray(samples, dtype=np.float32))

    def load(self, row: ResultRow) -> np.ndarray | None:
        path = self.path(*row.unit, row.metric)
        try:
            return open_npy(path, kind="bootstrap samples").astype(np.float64)
        except InputError:
            return None
