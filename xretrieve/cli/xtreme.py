"""``xretrieve xtreme score``: an XTREME submission scored as XTREME's ``evaluate.py`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import Command, print_json, print_table, reports_errors
from xretrieve.xtreme import TASK_NAMES, XtremeScores, score_submission

app = typer.Typer(
    help="The XTREME benchmark (Hu et al. 2020): score submissions in its layout.",
    no_args_is_help=True,
)


@app.command("score", cls=Command)
@reports_errors
def score(
    predictions: Annotated[
        Path,
        typer.Option(
            help="Submission folder: TASK/test-LANG.tsv (classification, tagging, BUCC, "
            "Tatoeba) and TASK/test-LANG.json (QA), as XTREME's mock_test_data/predictions."
        ),
    ],
    labels: Annotated[Path, typer.Option(help="Label folder in the same layout.")],
    tasks: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated tasks to score (default: every task with a folder on both "
            f"sides). Known: {', '.join(TASK_NAMES)}."
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="The report of XTREME's evaluate.py as JSON on stdout."),
    ] = False,
) -> None:
    """Score every language of each task found (all of a task's languages are needed), the
    per-task averages, the group scores and all_task as XTREME's evaluate.py; writes nothing."""
    names = None
    if tasks is not None:
        names = tuple(part.strip() for part in tasks.split(",") if part.strip()) or None
    scores = score_submission(predictions, labels, tasks=names)
    if json_output:
        print_json(scores.to_json())
        return
    _print_scores(scores)


def _print_scores(scores: XtremeScores) -> None:
    """One table per task (its languages, then the averages), then the summary."""
    for task_score in scores.tasks:
        metrics = task_score.task.scoring.metrics
        rows: list[list[object]] = [
            [score.language, *(score.values[metric] for metric in metrics)]
            for score in task_score.languages
        ]
        rows.append(["avg", *(task_score.averages[f"avg_{metric}"] for metric in metrics)])
        print_table(f"{task_score.task.name}", ["language", *metrics], rows)
    summary: list[list[object]] = [
        [score.task.name, score.task.group.value, score.avg_metric] for score in scores.tasks
    ]
    summary += [[group.value, "group", value] for group, value in scores.groups.items()]
    if scores.all_task is not None:
        summary.append(["all_task", "", scores.all_task])
    print_table("XTREME", ["score", "group", "avg_metric"], summary)
