"""What every command shares: error reporting, progress bars, JSON and table output."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import importlib
import json
import math
import os
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
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
from typer.core import TyperCommand, TyperGroup

from xretrieve.core.errors import ShowParameter, XRetrieveError, python_parameter
from xretrieve.core.interrupts import EXIT_TERMINATED, Terminated, sigterm_as_interrupt
from xretrieve.core.progress import ProgressCallback

stdout = Console()
stderr = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_HELP = "Progress bars on stderr (--no-progress: none, e.g. for logs and scripts)."

EXIT_INPUT_ERROR = 2

# Options that several commands declare alike (typer reads the help and flag from the type).
ModelOption = Annotated[str | None, typer.Option(help="Encoder directory or Hugging Face id.")]
TextPrefixOption = Annotated[
    str | None, typer.Option(help="Prepended to every text (default: the model's own prefix).")
]
EmbDirOption = Annotated[
    Path | None, typer.Option(help="Embeddings directory mirroring --data-dir.")
]
KnnDeviceOption = Annotated[str, typer.Option(help="kNN device: auto, cpu or cuda.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)]
PromptOption = Annotated[
    str | None,
    typer.Option(
        help="One of the model's prompts, by name, instead of its default (e.g. query, "
        "passage: a sentence-transformers folder's prompts, E5's)."
    ),
]
EXIT_INTERRUPTED = 130


# Library parameters that a command's option of another name gives (``MineRequest.tgt_lang`` is
# ``mine --tgt``): shown as these options when no option of the command has the parameter's name.
LIBRARY_PARAMETERS = {
    "src_lang": "--src",
    "tgt_lang": "--tgt",
    "gold_file": "--gold",
    "indexes": "--src-index/--tgt-index",
    "out_dir": "--out",
    "bucc_tune_split": "--tune-split",
    "bucc_eval_split": "--eval-split",
}


def _long_option(option: click.Parameter) -> str:
    return next((name for name in option.opts if name.startswith("--")), option.opts[0])


def _current_context() -> click.Context | None:
    """The context of the command running now. typer 0.16 and later run their own copy of
    click (``typer._click``), whose context stack is not click's."""
    for module in ("typer._click.globals", "click.globals"):
        try:
            context = importlib.import_module(module).get_current_context(silent=True)
        except ImportError:
            continue
        if context is not None:
            return context
    return None


def show_as_option(command: click.Command | None) -> ShowParameter:
    """How an error of the library shows a parameter it names (``XRetrieveError.render``): as
    the option of ``command`` with the parameter's name (else ``LIBRARY_PARAMETERS``), with the
    value where the message gives one (``--device cpu``, quoted for a shell where needed; a list
    comma-separated; ``--overwrite`` for True and the ``--no-`` form for False of an on/off
    flag); a parameter no option gives stays as in Python."""
    options = {
        param.name: param
        for param in (command.params if command is not None else ())
        if param.param_type_name == "option" and param.name
    }

    def show(name: str, value: str | None) -> str:
        option = options.get(name)
        flag = _long_option(option) if option is not None else LIBRARY_PARAMETERS.get(name)
        if value is None:
            return flag or name
        try:
            literal = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            literal = value
        if literal is False:
            negative = options.get(f"no_{name}")  # a separate --no-NAME flag
            if option is not None and option.secondary_opts:
                return option.secondary_opts[0]
            if negative is not None:
                return _long_option(negative)
            return python_parameter(name, value)
        if flag is None:
            return python_parameter(name, value)
        if literal is True:
            return flag
        if isinstance(literal, list | tuple):
            literal = ",".join(map(str, literal))
        return f"{flag} {shlex.quote(str(literal))}"

    return show


def error_line(error: XRetrieveError) -> str:
    """``error``'s message for the command running now: the parameters it names shown as that
    command's options."""
    context = _current_context()
    return error.render(show_as_option(context.command if context is not None else None))


def reports_errors(command: F) -> F:
    """Turn the library's own errors into one line on stderr and exit code 2, Ctrl-C into exit
    code 130 and SIGTERM into 143 (after the same clean-up), instead of a traceback. The
    parameters an error names are shown as the command's options (``show_as_option``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return command(*args, **kwargs)
        except Terminated:
            stderr.print("[yellow]terminated (SIGTERM)[/]")
            raise typer.Exit(EXIT_TERMINATED) from None
        except XRetrieveError as error:
            # escape: messages quote user text and config syntax such as "[[tasks]]".
            stderr.print(
                f"[bold red]error:[/] {escape(error_line(error))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_INPUT_ERROR) from None
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A ProgressCallback drawing one rich bar per stage on stderr, from the first report on, so
    that a call whose checks fail before any work leaves nothing on stderr but its error line
    (an empty display would end with a blank line)."""
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
        if not bars.live.is_started:
            bars.start()
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    try:
        yield report
    finally:
        if bars.live.is_started:
            bars.stop()


def finite_float(value: float | None) -> float | None:
    """A typer callback for float options: NaN and infinities are refused (exit 2)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, not {value}")
    return value


def json_safe(payload: Any) -> Any:
    """``payload`` with every NaN or infinite float replaced by None (JSON has no such numbers)
    and every dataclass instance as the dict of its fields (``dataclasses.asdict``)."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        return json_safe(dataclasses.asdict(payload))
    if isinstance(payload, dict):
        return {key: json_safe(value) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [json_safe(value) for value in payload]
    return payload


def _usage_error_classes() -> tuple[type[Exception], ...]:
    """click's ``UsageError`` and, where typer parses with its own copy of click
    (``typer._click``, typer 0.17 and later), that copy's."""
    try:
        vendored = importlib.import_module("typer._click.exceptions").UsageError
    except (ImportError, AttributeError):
        return (click.UsageError,)
    return (click.UsageError, vendored)


USAGE_ERRORS = _usage_error_classes()


def _usage_error_line(error: Any) -> NoReturn:
    """A command line click cannot parse (an unknown option or command, a value outside an
    option's choices or range, a missing option) is bad input like any other: one line on
    stderr and exit code 2, not a usage block."""
    command = error.ctx.command_path if error.ctx is not None else "xretrieve"
    stderr.print(
        f"[bold red]error:[/] {escape(error.format_message())} (see '{command} --help')",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_INPUT_ERROR)


class CommandGroup(TyperGroup):
    """typer's command group whose usage errors are one line (``_usage_error_line``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERRORS as error:
            _usage_error_line(error)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except USAGE_ERRORS as error:
            _usage_error_line(error)


class Command(TyperCommand):
    """typer's command with plainer help: usage lines name arguments as ``CHECKPOINT`` (required)
    or ``[MODEL]`` (optional) rather than ``{checkpoint}``, and on/off flags show no ``<bool>``
    value they do not take. Usage errors are one line (``_usage_error_line``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERRORS as error:
            _usage_error_line(error)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").upper()
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        for param in params:
            flag = param.param_type_name == "option" and getattr(param, "is_flag", False)
            if flag and param.metavar is None:
                param.metavar = ""  # typer shows a flag's metavar as its value type
        return params


def print_json(payload: Any) -> None:
    """Machine-readable output: one JSON document on stdout (non-finite numbers as null,
    dataclasses as objects of their fields)."""
    text = json.dumps(
        json_safe(payload), indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False
    )
    typer.echo(text)


def threshold_text(value: float) -> str:
    """A mining threshold for a table: six significant digits, since margin scores of real
    candidates differ in the third decimal and beyond (the JSON output keeps every digit)."""
    return f"{value:.6g}"


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """People-readable output: a rich table on stdout; floats with two decimals (pass a string
    for more). On a terminal the table fits its width; written to a file or a pipe (where rich
    would assume 80 columns) it keeps its natural width, unless COLUMNS says otherwise."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(f"{value:.2f}" if isinstance(value, float) else str(value) for value in row)
        )
    if stdout.is_terminal or "COLUMNS" in os.environ:
        stdout.print(table)
        return
    unbounded = stdout.options.update(width=1 << 16, max_width=1 << 16)
    width = max(Measurement.get(stdout, unbounded, table).maximum, stdout.width)
    Console(width=width).print(table)


def quiet_transformers() -> None:
    """transformers draws its own tqdm bars and warnings when loading and saving; ours are
    enough (``train`` and ``xtreme run``/``predict``)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
