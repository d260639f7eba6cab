"""The reports of ``xtreme run``: the paper's table, intermediate checkpoints as rows and target
tasks as columns, per split (dev, test), from the unit records.

A task's cell is its ``avg_metric`` (XTREME's headline: accuracy, F1, or for QA the mean of
exact match and F1) averaged over seeds, with the standard deviation over seeds (sample, n - 1)
when there are several. Group scores and ``all_task`` are computed per seed by
``xretrieve.xtreme.score.aggregate`` (XTREME's ``evaluate.py`` rules) from the tasks scored, then
averaged; a task not scored in every XTREME language is marked partial (``*``), and so is an
aggregate that includes one. Resource groups (``xretrieve evaluate``'s high / medium / low of
Joshi et al. 2020) average each task's per-language headline over the group's languages; their
row mean averages over the XTREME tasks that have languages in the group. Each language's
headline is reported too (mean and std over seeds). Differences are to the baseline row. Extra
target tasks (``xflickrco``) get columns of their own, per language and per resource group like
the XTREME tasks, and stay out of every aggregate.

Written: ``grid.json``, ``grid.md`` and ``plots/{test,dev}_delta.png`` (or ``..._scores.png``
without a baseline), ``plots/{test,dev}_resource_groups.png`` and per task
``plots/{test,dev}_languages_TASK.png``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.files import atomic_write
from xretrieve.xtreme.outputs import GRID_JSON, GRID_MD, PLOTS_DIR, write_json
from xretrieve.xtreme.score import TaskScore, aggregate
from xretrieve.xtreme.targets import TargetTask, target_by_name
from xretrieve.xtreme.tasks import GROUP_TASKS, TASK_NAMES

SPLITS = ("test", "dev")
RESOURCE_GROUPS = ("high", "medium", "low", "unknown")


def _stat(values: Sequence[float], complete: bool = True) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "n": len(values),
        "complete": complete,
    }


def _language_group(lang: str) -> str:
    from xretrieve.trainer.crosslingual import language_group

    return language_group(lang)


def _per_seed(
    records: Sequence[Mapping[str, Any]], checkpoint: str, seeds: Sequence[int], split: str
) -> dict[int, dict[str, Mapping[str, Any]]]:
    """seed -> task -> that split's scores (a retrieval unit's for every seed)."""
    table: dict[int, dict[str, Mapping[str, Any]]] = {seed: {} for seed in seeds}
    for record in records:
        if record["checkpoint"] != checkpoint:
            continue
        scores = (record.get("scores") or {}).get(split)
        if scores is None:
            continue
        for seed in seeds if record["seed"] is None else (record["seed"],):
            if seed in table:
                table[seed][record["task"]] = scores
    return table


def _row(
    checkpoint: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    seeds: Sequence[int],
    split: str,
) -> dict[str, Any]:
    per_seed = _per_seed(records, checkpoint["name"], seeds, split)
    targets = {name: target_by_name(name) for name in tasks}
    row: dict[str, Any] = {"checkpoint": checkpoint["name"], "baseline": checkpoint["baseline"]}
    row["tasks"] = {}
    for name in tasks:
        found = [per_seed[s][name] for s in seeds if name in per_seed[s]]
        complete = all(scores["complete"] for scores in found)
        row["tasks"][name] = _stat([float(scores["avg_metric"]) for scores in found], complete)
    groups: dict[str, list[float]] = {}
    partial: dict[str, bool] = {}
    all_task: list[float] = []
    for seed in seeds:
        xtreme = [
            TaskScore(targets[n].xtreme, (), {}, float(per_seed[seed][n]["avg_metric"]))
            for n in tasks
            if targets[n].xtreme is not None and n in per_seed[seed]
        ]
        scores = aggregate(xtreme)
        for group, value in scores.groups.items():
            groups.setdefault(group.value, []).append(value)
            members = GROUP_TASKS[group]
            partial[group.value] = partial.get(group.value, False) or not all(
                per_seed[seed][n]["complete"] for n in members
            )
        if scores.all_task is not None:
            all_task.append(scores.all_task)
            partial["all_task"] = partial.get("all_task", False) or not all(
                per_seed[seed][n]["complete"] for n in TASK_NAMES
            )
    row["groups"] = {g: _stat(v, not partial[g]) for g, v in groups.items()}
    row["all_task"] = _stat(all_task, not partial.get("all_task", False))
    row["resource_groups"], row["resource_mean"] = _resource_groups(per_seed, targets, seeds)
    row["languages"] = _languages(per_seed, targets, seeds)
    return row


def _languages(
    per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]],
    targets: Mapping[str, TargetTask],
    seeds: Sequence[int],
) -> dict[str, dict[str, Any]]:
    """Per task, per language: the language's headline (``language_headline``) over seeds."""
    from xretrieve.xtreme.units import language_headline

    values: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for name, scores in per_seed[seed].items():
            target = targets.get(name)
            if target is None:
                continue
            for lang, metrics in scores["languages"].items():
                values.setdefault(name, {}).setdefault(lang, []).append(
                    language_headline(target, metrics)
                )
    return {
        name: {lang: _stat(found) for lang, found in languages.items()}
        for name, languages in values.items()
    }


def _resource_groups(
    per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]],
    targets: Mapping[str, TargetTask],
    seeds: Sequence[int],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per task, per resource group: the mean of the languages' headlines (then over seeds);
    and per group the mean over the XTREME tasks that have the group."""
    from xretrieve.xtreme.units import language_headline

    by_task: dict[str, dict[str, list[float]]] = {}
    row_means: dict[str, list[float]] = {}
    for seed in seeds:
        seed_groups: dict[str, list[float]] = {}
        for name, scores in per_seed[seed].items():
            target = targets.get(name)
            if target is None:
                continue
            members: dict[str, list[float]] = {}
            for lang, values in scores["languages"].items():
                members.setdefault(_language_group(lang), []).append(
                    language_headline(target, values)
                )
            for group, values in members.items():
                mean = float(np.mean(values))
                by_task.setdefault(name, {}).setdefault(group, []).append(mean)
                if target.in_aggregate:
                    seed_groups.setdefault(group, []).append(mean)
        for group, values in seed_groups.items():
            row_means.setdefault(group, []).append(float(np.mean(values)))
    per_task = {
        name: {g: _stat(groups[g]) for g in RESOURCE_GROUPS if g in groups}
        for name, groups in by_task.items()
    }
    means = {g: _stat(row_means[g]) for g in RESOURCE_GROUPS if g in row_means}
    return per_task, means


def _delta(row: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    def diff(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> float | None:
        if a is None or b is None:
            return None
        return a["mean"] - b["mean"]

    return {
        "tasks": {n: diff(v, base["tasks"].get(n)) for n, v in row["tasks"].items()},
        "groups": {g: diff(v, base["groups"].get(g)) for g, v in row["groups"].items()},
        "all_task": diff(row["all_task"], base["all_task"]),
        "resource_mean": {
            g: diff(v, base["resource_mean"].get(g)) for g, v in row["resource_mean"].items()
        },
        "resource_groups": {
            n: {g: diff(v, base["resource_groups"].get(n, {}).get(g)) for g, v in groups.items()}
            for n, groups in row["resource_groups"].items()
        },
        "languages": {
            n: {lang: diff(v, base["languages"].get(n, {}).get(lang)) for lang, v in langs.items()}
            for n, langs in row["languages"].items()
        },
    }


def build_grid(run: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The report as JSON (``grid.json``): run settings, the retrieval protocol of each
    checkpoint, and per split the rows (see the module docstring)."""
    tasks = list(run["tasks"])
    seeds = list(run["seeds"])
    grid: dict[str, Any] = {**run, "protocol": {}, "splits": {}}
    for record in records:
        if record.get("protocol"):
            grid["protocol"].setdefault(record["checkpoint"], {})[record["task"]] = record[
                "protocol"
            ]["description"]
    for split in SPLITS:
        rows = [_row(c, records, tasks, seeds, split) for c in run["checkpoints"]]
        if not any(cell for row in rows for cell in row["tasks"].values()):
            continue
        base = next((row for row in rows if row["baseline"]), None)
        for row in rows:
            row["delta"] = None if base is None or row is base else _delta(row, base)
        grid["splits"][split] = {"rows": rows}
    return grid


def _cell(stat: Mapping[str, Any] | None) -> str:
    if stat is None:
        return "–"
    text = f"{stat['mean']:.2f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.2f}"
    return text + ("" if stat.get("complete", True) else "*")


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _columns(grid: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """XTREME tasks, aggregate columns (the groups all of whose tasks are run; all_task when
    the nine are), extra tasks."""
    extra = list(grid["extra_tasks"])
    xtreme = [name for name in grid["tasks"] if name not in extra]
    groups = [g.value for g in GROUP_TASKS if all(n in xtreme for n in GROUP_TASKS[g])]
    every = all(n in xtreme for n in TASK_NAMES)
    return xtreme, groups + (["all_task"] if every else []), extra


def _name(row: Mapping[str, Any]) -> str:
    return row["checkpoint"] + (" (baseline)" if row["baseline"] else "")


def grid_table(grid: Mapping[str, Any], split: str) -> tuple[list[str], list[list[str]]]:
    """The main table of ``split``: header and one row of cells per checkpoint."""
    xtreme, aggregates, extra = _columns(grid)
    header = ["checkpoint", *xtreme, *aggregates, *extra]
    rows = [
        [_name(row), *(_cell(stat) for stat, _ in _row_cells(row, grid))]
        for row in grid["splits"][split]["rows"]
    ]
    return header, rows


def grid_markdown(grid: Mapping[str, Any]) -> str:
    """``grid.md``: per split, the scores, the differences to the baseline and the resource
    groups."""
    seeds = grid["seeds"]
    lines = [
        "# XTREME phase 3: checkpoints × target tasks",
        "",
        f"Recipe preset `{grid['preset']}`; seeds {', '.join(map(str, seeds))} "
        f"({'mean ± sample standard deviation over seeds' if len(seeds) > 1 else 'one seed'}). "
        "Cells: XTREME's avg_metric (accuracy; F1; QA: mean of exact match and F1) over the "
        "languages scored; `*` marks a task not scored in every XTREME language (or an "
        "aggregate including one); `–` not scored. Extra tasks stay out of the aggregates.",
        "",
    ]
    for name in grid["extra_tasks"]:
        metric = target_by_name(name).main_metric
        lines.append(f"- extra task {name}: the mean of `{metric}` over the languages scored")
    for name, tasks in grid["protocol"].items():
        for task, description in tasks.items():
            lines.append(f"- retrieval, {name} {task}: {description}")
    lines.append("")
    for split in grid["splits"]:
        lines += _split_markdown(grid, split)
    return "\n".join(lines).rstrip() + "\n"


def _split_markdown(grid: Mapping[str, Any], split: str) -> list[str]:
    rows = grid["splits"][split]["rows"]
    header, cells = grid_table(grid, split)
    lines = [f"## {split}", "", *_table(header, cells)]
    deltas = [row for row in rows if row["delta"] is not None]
    if deltas:
        lines += [f"### {split}: difference to the baseline", ""]
        differences = [
            [_name(row), *(_signed(delta) for _, delta in _row_cells(row, grid))] for row in deltas
        ]
        lines += _table(header, differences)
    groups = [g for g in RESOURCE_GROUPS if any(g in r["resource_mean"] for r in rows)]
    if groups:
        means = [
            [_name(row), *(_with_delta(row, ("resource_mean",), g) for g in groups)] for row in rows
        ]
        title = (
            f"### {split}: resource groups (mean over the XTREME tasks of each group's languages)"
        )
        lines += [title, "", *_table(["checkpoint", *groups], means)]
    xtreme, _, extra = _columns(grid)
    groups = [
        g
        for g in RESOURCE_GROUPS
        if any(g in per_task for r in rows for per_task in r["resource_groups"].values())
    ]
    detail = [
        [
            _name(row),
            task,
            *(_with_delta(row, ("resource_groups", task), g) for g in groups),
        ]
        for row in rows
        for task in [*xtreme, *extra]
        if row["resource_groups"].get(task)
    ]
    if detail:
        lines += [f"### {split}: resource groups per task", ""]
        lines += _table(["checkpoint", "task", *groups], detail)
    return lines + _languages_markdown(grid, split)


def _with_delta(row: Mapping[str, Any], where: Sequence[str], key: str) -> str:
    """The cell of ``row[where...][key]``, with its difference to the baseline in parentheses
    on compared rows."""
    stat: Any = row
    delta: Any = row["delta"]
    for part in where:
        stat = stat.get(part, {})
        delta = None if delta is None else delta.get(part, {})
    text = _cell(stat.get(key))
    if delta is not None:
        text += f" ({_signed(delta.get(key))})"
    return text


def _languages_markdown(grid: Mapping[str, Any], split: str) -> list[str]:
    """One table per task: checkpoints in rows, the task's languages (ordered by resource
    group) in columns, the difference to the baseline in parentheses."""
    rows = grid["splits"][split]["rows"]
    xtreme, _, extra = _columns(grid)
    lines: list[str] = []
    for task in [*xtreme, *extra]:
        languages = _ordered_languages(rows, task)
        if not languages:
            continue
        cells = [
            [_name(row), *(_with_delta(row, ("languages", task), lang) for lang in languages)]
            for row in rows
        ]
        header = ["checkpoint", *(f"{lang} ({_language_group(lang)})" for lang in languages)]
        lines += [f"### {split}: {task} per language", "", *_table(header, cells)]
    return lines


def _ordered_languages(rows: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """The languages any row scored for ``task``, by resource group (high first), then in the
    order they were scored."""
    seen = dict.fromkeys(lang for row in rows for lang in row["languages"].get(task, {}))
    order = {group: i for i, group in enumerate(RESOURCE_GROUPS)}
    return sorted(seen, key=lambda lang: order.get(_language_group(lang), len(order)))


def _estimate(stat: Mapping[str, Any] | None, delta: float | None, compared: bool) -> Any:
    """A bar: the difference to the baseline (``compared``) or the score, ± the seeds' std."""
    from xretrieve.evaluation.aggregate import Estimate

    if stat is None or (compared and delta is None):
        return None
    center = delta if compared else stat["mean"]
    spread = stat.get("std") or 0.0
    return Estimate(center, center - spread, center + spread)


def _row_cells(row: Mapping[str, Any], grid: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """(stat, difference) of each column of the main table, in ``_columns`` order."""
    xtreme, aggregates, extra = _columns(grid)
    delta = row["delta"] or {"tasks": {}, "groups": {}, "all_task": None}
    cells = [(row["tasks"].get(t), delta["tasks"].get(t)) for t in xtreme]
    for name in aggregates:
        if name == "all_task":
            cells.append((row["all_task"], delta["all_task"]))
        else:
            cells.append((row["groups"].get(name), delta["groups"].get(name)))
    return cells + [(row["tasks"].get(t), delta["tasks"].get(t)) for t in extra]


def grid_plots(grid: Mapping[str, Any], plots_dir: Path) -> list[Path]:
    """Per split: bars of each task, group and all_task (the difference to the baseline when
    there is one, else the scores; whiskers: ± the standard deviation over seeds), and of the
    resource groups."""
    from xretrieve.evaluation.plots import grouped_bars

    xtreme, aggregates, extra = _columns(grid)
    written = []
    for split, body in grid["splits"].items():
        rows = body["rows"]
        compared = any(row["delta"] is not None for row in rows)
        shown = [row for row in rows if row["delta"] is not None] or rows
        kind = "delta" if compared else "scores"
        ylabel = "difference to the baseline (points)" if compared else "score"
        series = {
            row["checkpoint"]: [_estimate(s, d, compared) for s, d in _row_cells(row, grid)]
            for row in shown
        }
        path = plots_dir / f"{split}_{kind}.png"
        grouped_bars(
            path, f"XTREME {split}: {kind}", ylabel, [*xtreme, *aggregates, *extra], series
        )
        written.append(path)
        groups = [g for g in RESOURCE_GROUPS if any(g in r["resource_mean"] for r in rows)]
        if groups:
            series = {
                row["checkpoint"]: [
                    _estimate(
                        row["resource_mean"].get(g),
                        (row["delta"] or {}).get("resource_mean", {}).get(g),
                        compared,
                    )
                    for g in groups
                ]
                for row in shown
            }
            path = plots_dir / f"{split}_resource_groups.png"
            grouped_bars(path, f"XTREME {split}: resource groups ({kind})", ylabel, groups, series)
            written.append(path)
        for task in [*xtreme, *extra]:
            languages = _ordered_languages(rows, task)
            if not languages:
                continue
            series = {
                row["checkpoint"]: [
                    _estimate(
                        row["languages"].get(task, {}).get(lang),
                        (row["delta"] or {}).get("languages", {}).get(task, {}).get(lang),
                        compared,
                    )
                    for lang in languages
                ]
                for row in shown
            }
            labels = [f"{lang} ({_language_group(lang)})" for lang in languages]
            path = plots_dir / f"{split}_languages_{task}.png"
            grouped_bars(path, f"{task} {split}: per language ({kind})", ylabel, labels, series)
            written.append(path)
    return written


def write_grid_reports(
    out_dir: Path, run: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[Path]]:
    """Write ``grid.json``, ``grid.md`` and the plots; returns the grid and the files."""
    grid = build_grid(run, records)
    write_json(out_dir / GRID_JSON, grid)
    with atomic_write(out_dir / GRID_MD) as handle:
        handle.write(grid_markdown(grid))
    plots = grid_plots(grid, out_dir / PLOTS_DIR)
    return grid, [out_dir / GRID_JSON, out_dir / GRID_MD, *plots]
