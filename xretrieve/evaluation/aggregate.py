"""From result rows to comparisons: task averages, paired gains against a baseline, and gains
averaged per resource group, each with a bootstrap interval.

Gains are paired: a checkpoint's and the baseline's bootstrap replicates of one language come
from the same resampled sentences (see ``bootstrap``), so their difference, replicate by
replicate, is the bootstrap distribution of the gain. An average over languages (a task average
or a resource group) averages the per-language replicates: languages are fixed, sentences are
resampled within each, which is the uncertainty of "this set of languages on this data".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xretrieve.evaluation.bootstrap import percentile_interval
from xretrieve.evaluation.resources import UNKNOWN, ordered_groups
from xretrieve.evaluation.results import ERROR_METRIC, ResultRow, SampleStore


@dataclass(frozen=True)
class Estimate:
    """A value with its 95 % interval (None when no replicates exist) over ``n_langs`` languages."""

    value: float
    low: float | None
    high: float | None
    n_langs: int = 1

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


Unit = tuple[str, int, str, str]  # (store_id, layer, task, lang)


@dataclass(frozen=True)
class PrimaryScores:
    """Each unit's primary metric and its bootstrap replicates (None when not computed)."""

    values: Mapping[Unit, float]
    samples: Mapping[Unit, np.ndarray | None]
    errors: Mapping[Unit, str]

    def langs(self, model: str, layer: int, task: str) -> list[str]:
        return sorted(
            lang for (h, lay, t, lang) in self.values if (h, lay, t) == (model, layer, task)
        )


def primary_scores(
    rows: Iterable[ResultRow], primary: Mapping[str, str], samples: SampleStore
) -> PrimaryScores:
    """Collect ``primary[task]`` rows (and their replicates) and the error rows."""
    values: dict[Unit, float] = {}
    replicates: dict[Unit, np.ndarray | None] = {}
    errors: dict[Unit, str] = {}
    for row in rows:
        if row.metric == ERROR_METRIC:
            errors[row.unit] = row.error or "failed"
        elif primary.get(row.task) == row.metric and row.value is not None:
            values[row.unit] = row.value
            replicates[row.unit] = samples.load(row) if row.ci_low is not None else None
    return PrimaryScores(values, replicates, errors)


def _mean_estimate(values: Sequence[float], replicates: Sequence[np.ndarray | None]) -> Estimate:
    value = float(np.mean(values))
    if not replicates or any(r is None for r in replicates):
        return Estimate(value, None, None, len(values))
    if len({r.shape for r in replicates}) != 1:  # type: ignore[union-attr]
        return Estimate(value, None, None, len(values))
    low, high = percentile_interval(np.mean(np.stack(replicates), axis=0))  # type: ignore[arg-type]
    return Estimate(value, low, high, len(values))


def average(
    scores: PrimaryScores,
    model: str,
    layer: int,
    task: str,
    langs: Sequence[str] | None = None,
) -> Estimate | None:
    """Mean over ``langs`` (default: every scored language) of one checkpoint/layer/task."""
    langs = scores.langs(model, layer, task) if langs is None else langs
    units = [(model, layer, task, lang) for lang in langs]
    units = [unit for unit in units if unit in scores.values]
    if not units:
        return None
    return _mean_estimate([scores.values[u] for u in units], [scores.samples[u] for u in units])


def gain(scores: PrimaryScores, unit: Unit, baseline_unit: Unit) -> Estimate | None:
    """Paired gain of ``unit`` over ``baseline_unit`` (same task and language)."""
    if unit not in scores.values or baseline_unit not in scores.values:
        return None
    a, b = scores.samples.get(unit), scores.samples.get(baseline_unit)
    diff = scores.values[unit] - scores.values[baseline_unit]
    return _mean_estimate([diff], [None if a is None or b is None else a - b])


def mean_gain(
    scores: PrimaryScores,
    model: str,
    layer: int,
    baseline_model: str,
    baseline_layer: int,
    task: str,
    langs: Sequence[str],
) -> Estimate | None:
    """Mean paired gain over the ``langs`` both checkpoints have."""
    diffs, replicates = [], []
    for lang in langs:
        unit = (model, layer, task, lang)
        base = (baseline_model, baseline_layer, task, lang)
        if unit not in scores.values or base not in scores.values:
            continue
        diffs.append(scores.values[unit] - scores.values[base])
        a, b = scores.samples.get(unit), scores.samples.get(base)
        replicates.append(None if a is None or b is None else a - b)
    if not diffs:
        return None
    return _mean_estimate(diffs, replicates)


def group_languages(langs: Iterable[str], groups: Mapping[str, str]) -> dict[str, list[str]]:
    """``{group: sorted langs}`` in report order (high, medium, low, others, unknown)."""
    by_group: dict[str, list[str]] = {}
    for lang in sorted(set(langs)):
        by_group.setdefault(groups.get(lang, UNKNOWN), []).append(lang)
    return {group: by_group[group] for group in ordered_groups(by_group)}
