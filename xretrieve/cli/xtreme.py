"""``xretrieve xtreme``: ``score`` (a submission scored as XTREME's ``evaluate.py`` does), ``run``
(phase 3: fine-tune and evaluate every checkpoint on every target task) and ``predict`` (one
task's predictions and scores from an already fine-tuned checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    Command,
    print_json,
    print_table,
    progress_bars,
    quiet_transformers,
    reports_errors,
    stderr,
)
from xretrieve.core.settings import Device
from xretrieve.xtreme import TASK_NAMES, XtremeScores, score_submission
from xretrieve.xtreme.targets import EXTRA_TARGETS

app = typer.Typer(
    help="The XTREME benchmark (Hu et al. 2020): phase 3 runs, predictions, and scores of "
    "submissions in its layout.",
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


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip()) or None


@app.command("run", cls=Command)
@reports_errors
def run(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Intermediate-task checkpoints (Hugging Face folders): the rows."),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(
            help="XTREME's download folder (scripts/download_data.sh's layout; Hugging Face "
            "google/xtreme exports beside its files, LASER's Tatoeba files)."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Run folder (new, empty, or an earlier run's: resumes it).")
    ],
    tasks: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated target tasks (default: {', '.join(TASK_NAMES)}); extra "
            f"tasks run only when named: {', '.join(EXTRA_TARGETS)} (image-text retrieval on "
            "DATA_DIR/image_text/, docs/multimodal.md)."
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="Checkpoint without intermediate training: run first, Δ columns."),
    ] = None,
    seeds: Annotated[
        int, typer.Option(min=1, help="Fine-tuning seeds per task (mean and std reported).")
    ] = 1,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML overrides of the recipes: preset = 'jiant'|'xtreme', seed, "
            "[fine_tuning], [retrieval], [TASK] (see docs/xtreme.md)."
        ),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to train and encode.")] = Device.AUTO,
    keep_models: Annotated[
        bool,
        typer.Option(
            "--keep-models/--no-keep-models",
            help="Keep each unit's fine-tuned target checkpoint (units/.../model, for "
            "`xtreme predict`).",
        ),
    ] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print grid.json on stdout instead of the table.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)] = True,
) -> None:
    """Phase 3 for every checkpoint and target task: fine-tune on the English training data
    (per-task recipes of jiant/XTREME), choose the checkpoint on the English dev set, predict every
    language's dev and test sets in XTREME's submission layout and score them as `xtreme score`
    does; BUCC and Tatoeba embed one layer (XTREME's protocol). Writes grid.md, grid.json and
    plots/ to --out. Resumable: a rerun keeps every finished unit whose checkpoint, data,
    recipe and seed are unchanged; Ctrl-C (130) and SIGTERM (143) lose at most the running unit."""
    from xretrieve.xtreme.run import RunRequest, run_xtreme

    quiet_transformers()
    request = RunRequest(
        checkpoints=tuple(checkpoints),
        data_dir=data_dir,
        out_dir=out,
        tasks=_names(tasks),
        baseline=baseline,
        seeds=seeds,
        config=config,
        device=device,
        keep_models=keep_models,
    )
    with progress_bars(progress) as bar:
        summary = run_xtreme(request, progress=bar)
    if json_output:
        print_json(summary.grid)
        return
    _print_grid(summary.grid)
    stderr.print(
        f"{len(summary.ran)} unit(s) run, {len(summary.kept)} kept; reports in "
        f"{summary.out_dir}/grid.md, grid.json, plots/",
        highlight=False,
    )


def _print_grid(grid: dict) -> None:
    """The main table of each split, as grid.md has it."""
    from xretrieve.xtreme.grid import grid_table

    for split in grid["splits"]:
        header, rows = grid_table(grid, split)
        print_table(f"XTREME {split}", header, rows)


@app.command("predict", cls=Command)
@reports_errors
def predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint fine-tuned on the task (xtreme run's model/).")
    ],
    task: Annotated[str, typer.Option(help=f"The XTREME task: {', '.join(TASK_NAMES)}.")],
    data_dir: Annotated[Path, typer.Option(help="XTREME's download folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (new, empty, or an earlier predict's).")],
    device: Annotated[Device, typer.Option(help="Where to predict.")] = Device.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per forward pass.")] = 64,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the scores as JSON instead of tables.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)] = True,
) -> None:
    """Predict every dev and test file of one task with an already fine-tuned checkpoint (no
    training), write predictions/ and labels/ in XTREME's submission layout and score the
    labelled splits as `xtreme score` does."""
    from xretrieve.xtreme.predict import predict_xtreme

    quiet_transformers()
    with progress_bars(progress) as bar:
        summary = predict_xtreme(
            checkpoint, task, data_dir, out, device=device, batch_size=batch_size, progress=bar
        )
    scores = {split: None if s is None else s.to_json() for split, s in summary.scores.items()}
    if json_output:
        print_json({"task": summary.task, "out_dir": str(summary.out_dir), "scores": scores})
        return
    for split, split_scores in summary.scores.items():
        if split_scores is None:
            stderr.print(f"{split}: no labelled file, predictions only", highlight=False)
            continue
        metrics = sorted({m for values in split_scores.languages.values() for m in values})
        rows: list[list[object]] = [
            [lang, *(values.get(m) for m in metrics)]
            for lang, values in split_scores.languages.items()
        ]
        rows.append(["avg", *(split_scores.averages.get(f"avg_{m}") for m in metrics)])
        print_table(f"{summary.task} {split}", ["language", *metrics], rows)
