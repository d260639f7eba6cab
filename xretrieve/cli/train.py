"""``xretrieve train CONFIG``: run (or resume) a training job described by a TOML/YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    print_json,
    quiet_transformers,
    reports_errors,
    stderr,
)


@reports_errors
def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (.toml, .yaml or .yml).")],
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the newest checkpoint in the output folder."),
    ] = False,
    resume_from: Annotated[
        Path | None, typer.Option("--resume-from", help="Continue from this checkpoint folder.")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Delete the previous run's checkpoints, metrics.jsonl and "
            "train_summary.json in the output folder (nothing else) and start over; without "
            "it an earlier run's folder is refused, and so is any other non-empty folder.",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)] = True,
) -> None:
    """Train the encoder on the config's tasks; checkpoints, metrics.jsonl and
    train_summary.json go to the output folder. Ctrl-C (exit 130) and SIGTERM (exit 143)
    save a resumable checkpoint."""
    from xretrieve.core.errors import InputError
    from xretrieve.trainer import load_config
    from xretrieve.trainer import train as run_training

    if overwrite and (resume or resume_from is not None):
        raise InputError(None, "--overwrite starts a new run; it cannot be combined with --resume")
    train_config = load_config(config)
    quiet_transformers()
    # Ctrl-C and SIGTERM (``reports_errors``: exit 130 and 143) reach here after the trainer
    # saved its resumable checkpoint.
    with _TrainProgress(progress) as bar:
        result = run_training(
            train_config,
            resume=resume_from if resume_from is not None else resume,
            overwrite=overwrite,
            device=device,
            progress=bar.progress,
            on_log=bar.log,
            on_eval=bar.evaluated,
        )
    print_json(
        {
            "output_dir": str(result.output_dir),
            "steps": result.steps,
            "last_checkpoint": _str(result.last_checkpoint),
            "best_checkpoint": _str(result.best_checkpoint),
            "best_score": result.best_score,
            "stopped_early": result.stopped_early,
            "last_metrics": result.history[-1].metrics if result.history else {},
        }
    )


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


class _TrainProgress:
    """One rich bar for the steps with the latest loss and throughput; evaluations as lines."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled = enabled
        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr,
        )
        self.task = None

    def __enter__(self) -> _TrainProgress:
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)

    def progress(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.task is None:
            self.task = self.bar.add_task("train", total=total, loss="-", speed="-")
        self.bar.update(self.task, completed=done, total=total)

    def log(self, entry) -> None:  # noqa: ANN001 - a StepLog; typed loosely to keep imports lazy
        if self.enabled and self.task is not None:
            self.bar.update(
                self.task, loss=f"{entry.loss:.4f}", speed=f"{entry.tokens_per_second:,.0f}"
            )

    def evaluated(self, record) -> None:  # noqa: ANN001 - an EvalRecord
        if not self.enabled:
            return
        shown = ", ".join(f"{name} {value:.2f}" for name, value in sorted(record.metrics.items()))
        best = " (best)" if record.is_best else ""
        self.bar.console.print(
            f"step {record.step}: {shown}{best}", highlight=False, soft_wrap=True
        )
