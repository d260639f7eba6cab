"""Reports of an output directory: compacted ``results.jsonl``, ``results.csv``, ``groups.csv``,
``leaderboard.md`` and ``plots/*.png``, rebuilt from the rows at the end of every run."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xretrieve.core.files import atomic_write
from xretrieve.evaluation.aggregate import (
    Estimate,
    PrimaryScores,
    average,
    gain,
    group_languages,
    mean_gain,
    primary_scores,
)
from xretrieve.evaluation.output import (
    BOOTSTRAP_DIR,
    CSV_FILE,
    GROUPS_FILE,
    LEADERBOARD_FILE,
    PLOTS_DIR,
    RESULTS_FILE,
)
from xretrieve.evaluation.resources import DEFAULT_GROUPS
from xretrieve.evaluation.results import ResultRow, ResultsLog, SampleStore, write_csv
from xretrieve.evaluation.tasks import TASKS, EvaluationTask

if TYPE_CHECKING:
    from xretrieve.evaluation.config import EvaluationConfig, ModelPlan


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _fmt_estimate(estimate: Estimate | None, signed: bool = False) -> str:
    if estimate is None:
        return "–"
    text = _fmt(estimate.value, signed)
    if estimate.low is not None:
        text += f" [{_fmt(estimate.low, signed)}, {_fmt(estimate.high, signed)}]"
    if signed and estimate.excludes_zero:
        text = f"**{text}**"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def report_layer(plan: ModelPlan) -> int:
    """The layer shown in per-language tables and plots: the last one listed."""
    return plan.layers[-1]


def _baseline_layer(baseline: ModelPlan, layer: int) -> int:
    return layer if layer in baseline.layers else report_layer(baseline)


class _Report:
    def __init__(
        self,
        config: EvaluationConfig,
        plans: Sequence[ModelPlan],
        tasks: Sequence[EvaluationTask],
        scores: PrimaryScores,
    ) -> None:
        self.config = config
        self.plans = list(plans)
        self.tasks = list(tasks)
        self.scores = scores
        self.groups = config.resource_groups or DEFAULT_GROUPS
        self.baseline = next(
            (
                plan
                for plan in plans
                if config.baseline is not None and plan.model == config.baseline
            ),
            None,
        )
        self.others = [plan for plan in plans if plan is not self.baseline]

    def task_langs(self, task: EvaluationTask) -> list[str]:
        langs = {unit[3] for unit in self.scores.values if unit[2] == task.name}
        langs |= {unit[3] for unit in self.scores.errors if unit[2] == task.name}
        return sorted(langs)

    def _gain_units(self, plan: ModelPlan, layer: int):
        assert self.baseline is not None
        return self.baseline.store_id, _baseline_layer(self.baseline, layer)

    def summary(self) -> list[str]:
        header = ["checkpoint", "layer"]
        for task in self.tasks:
            n = len(self.task_langs(task))
            header.append(f"{task.label} (avg of {n})")
            if self.baseline is not None:
                header.append(f"Δ {task.label}")
        rows = []
        for plan in self.plans:
            for layer in plan.layers:
                row = [plan.name + (" (baseline)" if plan is self.baseline else ""), str(layer)]
                for task in self.tasks:
                    langs = self.task_langs(task)
                    estimate = average(self.scores, plan.store_id, layer, task.name, langs)
                    cell = _fmt_estimate(estimate)
                    if estimate is not None and estimate.n_langs < len(langs):
                        cell += f" ({estimate.n_langs}/{len(langs)} langs)"
                    row.append(cell)
                    if self.baseline is not None:
                        base_model, base_layer = self._gain_units(plan, layer)
                        delta = None
                        if plan is not self.baseline:
                            delta = mean_gain(
                                self.scores,
                                plan.store_id,
                                layer,
                                base_model,
                                base_layer,
                                task.name,
                                langs,
                            )
                        row.append(_fmt_estimate(delta, signed=True))
                rows.append(row)
        return ["## Summary", ""] + _table(header, rows)

    def per_language(self, task: EvaluationTask) -> list[str]:
        langs = self.task_langs(task)
        metric = task.primary_metric
        lines = [f"## {task.label} per language (`{metric}`)", ""]
        rows = []
        for plan in self.plans:
            layer = report_layer(plan)
            cells = []
            for lang in langs:
                unit = (plan.store_id, layer, task.name, lang)
                if unit in self.scores.values:
                    cells.append(_fmt(self.scores.values[unit]))
                else:
                    cells.append("error" if unit in self.scores.errors else "–")
            rows.append([plan.name, str(layer), *cells])
        if self.baseline is not None:
            for plan in self.others:
                layer = report_layer(plan)
                base_model, base_layer = self._gain_units(plan, layer)
                cells = [
                    _fmt_estimate(
                        gain(
                            self.scores,
                            (plan.store_id, layer, task.name, lang),
                            (base_model, base_layer, task.name, lang),
                        ),
                        signed=True,
                    )
                    for lang in langs
                ]
                rows.append([f"Δ {plan.name}", str(layer), *cells])
        return lines + _table(["checkpoint", "layer", *langs], rows)

    def group_estimates(
        self, plan: ModelPlan, layer: int, task: EvaluationTask
    ) -> dict[str, Estimate | None]:
        """Per resource group: mean gain over the baseline, or the mean score without one."""
        by_group = group_languages(self.task_langs(task), self.groups)
        out: dict[str, Estimate | None] = {}
        for group, langs in by_group.items():
            if self.baseline is None:
                out[group] = average(self.scores, plan.store_id, layer, task.name, langs)
            else:
                base_model, base_layer = self._gain_units(plan, layer)
                out[group] = mean_gain(
                    self.scores,
                    plan.store_id,
                    layer,
                    base_model,
                    base_layer,
                    task.name,
                    langs,
                )
        return out

    def groups_section(self) -> list[str]:
        what = "mean gain over the baseline" if self.baseline else "mean score"
        lines = [f"## By resource group ({what})", ""]
        for task in self.tasks:
            by_group = group_languages(self.task_langs(task), self.groups)
            if not by_group:
                continue
            header = ["checkpoint", "layer"] + [f"{g} ({len(ls)})" for g, ls in by_group.items()]
            rows = []
            for plan in self.others if self.baseline else self.plans:
                layer = report_layer(plan)
                estimates = self.group_estimates(plan, layer, task)
                rows.append(
                    [plan.name, str(layer)]
                    + [
                        _fmt_estimate(estimates[g], signed=self.baseline is not None)
                        for g in by_group
                    ]
                )
            lines += [f"### {task.label}", ""] + _table(header, rows)
            lines += [
                "Languages: " + "; ".join(f"{g}: {', '.join(ls)}" for g, ls in by_group.items()),
                "",
            ]
        return lines

    def layer_section(self) -> list[str]:
        if all(len(plan.layers) < 2 for plan in self.plans):
            return []
        lines = ["## Layer sweep (task average)", ""]
        for task in self.tasks:
            layers = sorted({layer for plan in self.plans for layer in plan.layers})
            rows = []
            for plan in self.plans:
                averages = {
                    layer: average(self.scores, plan.store_id, layer, task.name)
                    for layer in plan.layers
                }
                best = max(
                    (layer for layer, e in averages.items() if e is not None),
                    key=lambda layer: averages[layer].value,  # type: ignore[union-attr]
                    default=None,
                )
                cells = []
                for layer in layers:
                    estimate = averages.get(layer)
                    text = _fmt(estimate.value) if estimate is not None else "–"
                    cells.append(f"**{text}**" if layer == best else text)
                rows.append([plan.name, *cells])
            lines += [f"### {task.label}", ""] + _table(["checkpoint", *map(str, layers)], rows)
        return lines

    def errors_section(self) -> list[str]:
        if not self.scores.errors:
            return []
        names = {plan.store_id: plan.name for plan in self.plans}
        lines = ["## Failed units", ""]
        for (h, layer, task, lang), message in sorted(self.scores.errors.items()):
            lines.append(f"- {names.get(h, h)} layer {layer} {task}/{lang}: {message}")
        return lines + [""]

    def markdown(self) -> str:
        scoring = self.config.scoring
        intro = [
            "# Leaderboard",
            "",
            f"Values in percent. `[low, high]`: 95 % bootstrap percentile interval "
            f"({scoring.resamples} resamples, seed {scoring.seed}). Layer: hidden-state index "
            "(0 = embeddings' output). BUCC: F1 on the "
            f"`{scoring.bucc_eval_split}` split with the threshold tuned on "
            f"`{scoring.bucc_tune_split}`. Tatoeba: `accuracy_en2xx` (English queries, XTREME's "
            "direction).",
        ]
        if self.baseline is not None:
            intro.append(
                f"Δ: difference to the baseline `{self.baseline.name}` at the same layer, paired "
                "bootstrap interval; **bold** when the interval excludes 0."
            )
        intro.append("")
        body = self.summary()
        for task in self.tasks:
            body += self.per_language(task)
        body += self.groups_section() + self.layer_section() + self.errors_section()
        return "\n".join(intro + body)

    def group_rows(self) -> list[list[object]]:
        rows: list[list[object]] = []
        for plan in self.others if self.baseline else self.plans:
            for layer in plan.layers:
                for task in self.tasks:
                    for group, estimate in self.group_estimates(plan, layer, task).items():
                        if estimate is None:
                            continue
                        rows.append(
                            [
                                plan.name,
                                plan.checkpoint_hash,
                                layer,
                                task.name,
                                group,
                                "gain" if self.baseline else "score",
                                estimate.value,
                                estimate.low,
                                estimate.high,
                                estimate.n_langs,
                                plan.store_id,
                            ]
                        )
        return rows

    def plots(self, directory: Path) -> list[Path]:
        from xretrieve.evaluation.plots import grouped_bars, layer_lines

        files = []
        for task in self.tasks:
            langs = self.task_langs(task)
            if not langs:
                continue
            series = {}
            for plan in self.plans:
                layer = report_layer(plan)
                series[plan.name] = [
                    Estimate(self.scores.values[u], *_interval(self.scores, u))
                    if (u := (plan.store_id, layer, task.name, lang)) in self.scores.values
                    else None
                    for lang in langs
                ]
            path = directory / f"per_language_{task.name}.png"
            grouped_bars(path, f"{task.label} per language", task.primary_metric, langs, series)
            files.append(path)
            groups = list(group_languages(langs, self.groups))
            gains = {
                plan.name: list(self.group_estimates(plan, report_layer(plan), task).values())
                for plan in (self.others if self.baseline else self.plans)
            }
            if gains:
                what = "gain over baseline" if self.baseline else "mean"
                path = directory / f"groups_{task.name}.png"
                grouped_bars(path, f"{task.label}: {what} by resource group", what, groups, gains)
                files.append(path)
            if any(len(plan.layers) > 1 for plan in self.plans):
                by_layer = {}
                for plan in self.plans:
                    points = {}
                    for layer in plan.layers:
                        estimate = average(self.scores, plan.store_id, layer, task.name)
                        if estimate is not None:
                            points[layer] = estimate.value
                    by_layer[plan.name] = points
                path = directory / f"layers_{task.name}.png"
                layer_lines(path, f"{task.label} by layer", task.primary_metric, by_layer)
                files.append(path)
        return files


def _interval(scores: PrimaryScores, unit) -> tuple[float | None, float | None]:
    samples = scores.samples.get(unit)
    if samples is None:
        return None, None
    from xretrieve.evaluation.bootstrap import percentile_interval

    return percentile_interval(samples)


GROUP_COLUMNS = (
    "checkpoint",
    "checkpoint_hash",
    "layer",
    "task",
    "group",
    "kind",
    "value",
    "ci_low",
    "ci_high",
    "n_langs",
    "store_id",
)


def write_reports(
    out_dir: Path,
    config: EvaluationConfig,
    plans: Sequence[ModelPlan],
    tasks: Sequence[EvaluationTask],
    data_hashes: Mapping[tuple[str, str], str] | None = None,
) -> tuple[list[Path], list[ResultRow]]:
    """Compact ``results.jsonl`` and write every report; returns ``(files, rows in scope)``:
    rows of ``plans``' models and layers and of ``tasks``, scored with ``config.scoring``, and
    for a (task, language) of ``data_hashes`` on that data (never a result of older data)."""
    out_dir = Path(out_dir)
    data_hashes = data_hashes or {}
    position = {plan.store_id: i for i, plan in enumerate(plans)}
    task_order = {name: i for i, name in enumerate(TASKS)}

    def order(row: ResultRow) -> tuple:
        return (
            position.get(row.unit[0], len(plans)),
            row.checkpoint,
            row.layer,
            task_order.get(row.task, len(task_order)),
            row.task,
            row.lang,
            row.metric,
        )

    all_rows = ResultsLog(out_dir / RESULTS_FILE).compact(order)
    write_csv(out_dir / CSV_FILE, all_rows)
    in_scope = {(p.store_id, layer) for p in plans for layer in p.layers}
    task_names = {task.name for task in tasks}
    settings = config.scoring.fingerprint()  # rows scored otherwise are history, not results
    rows = [
        r
        for r in all_rows
        if (r.unit[0], r.layer) in in_scope
        and r.task in task_names
        and r.settings == settings
        and data_hashes.get((r.task, r.lang), r.data_hash) == r.data_hash
    ]
    scores = primary_scores(
        rows, {t.name: t.primary_metric for t in tasks}, SampleStore(out_dir / BOOTSTRAP_DIR)
    )
    report = _Report(config, plans, tasks, scores)
    files = [out_dir / RESULTS_FILE, out_dir / CSV_FILE]
    with atomic_write(out_dir / LEADERBOARD_FILE) as handle:
        handle.write(report.markdown())
    files.append(out_dir / LEADERBOARD_FILE)
    with atomic_write(out_dir / GROUPS_FILE) as handle:
        writer = csv.writer(handle)
        writer.writerow(GROUP_COLUMNS)
        for row in report.group_rows():
            writer.writerow(["" if v is None else v for v in row])
    files.append(out_dir / GROUPS_FILE)
    if config.plots:
        files += report.plots(out_dir / PLOTS_DIR)
    return files, rows
