"""What every command shares: error reporting, progress bars, JSON and table output."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from xretrieve.errors import XRetrieveError
from xretrieve.progress import ProgressCallback

stdout = Console()
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130


def reports_errors(command: F) -> F:
    """Turn the library's own errors into one line on stderr and exit code 2, and Ctrl-C into
    exit code 130, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except XRetrieveError as error:
            # escape: messages quote user text and config syntax such as "[[tasks]]".
            stderr.print(
                f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_INPUT_ERROR) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A ProgressCallback drawing one rich bar per stage on stderr."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield report


def print_json(payload: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    typer.echo(json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """People-readable output: a rich table on stdout; floats with two decimals."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(f"{value:.2f}" if isinstance(value, float) else str(value) for value in row)
        )
    stdout.print(table)
