"""One mechanism for naming what went wrong: a library error names parameters (``{name}``,
``{name=value}``); ``str(error)`` writes them as a Python caller passes them and the CLI's
``reports_errors`` as the running command's options."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Annotated

import typer
from typer.testing import CliRunner

from xretrieve.cli.common import reports_errors
from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError

ERRORS: dict[str, XRetrieveError] = {
    "both": ArgumentError.from_template("give both {src_file} and {tgt_file}"),
    "argument": ArgumentError("batch_tokens", "must be an integer >= 1, not 0"),
    "values": XRetrieveError(
        "retry with {device='cpu'}, {overwrite=True}, {optimize=False}, {layers=(8, -1)} or "
        "{data_dir='/data/my folder'}",
        arguments=("device", "overwrite", "optimize", "layers", "data_dir"),
    ),
    "renamed": ArgumentError.from_template("use {tgt_lang='en'}; {out_dir} is taken"),
    "unknown": ArgumentError.from_template("{ort_options} does not apply to {backend='torch'}"),
    "input": InputError(
        Path("/tmp/{out}/x.npy"), "{out} is an input; {out_dir} too", arguments=("out",)
    ),
    "plain": XRetrieveError("a {brace} that names no parameter"),
}


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @reports_errors
    def run(
        which: str,
        src_file: Annotated[Path | None, typer.Option()] = None,
        tgt_file: Annotated[Path | None, typer.Option()] = None,
        batch_tokens: Annotated[int, typer.Option()] = 1,
        device: Annotated[str, typer.Option()] = "auto",
        overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
        no_optimize: Annotated[bool, typer.Option("--no-optimize")] = False,
        layers: Annotated[str | None, typer.Option()] = None,
        data_dir: Annotated[Path | None, typer.Option()] = None,
        out: Annotated[Path | None, typer.Option()] = None,
        tgt: Annotated[str, typer.Option()] = "en",
        backend: Annotated[str, typer.Option()] = "ort",
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        raise ERRORS[which]

    @app.command()
    def other() -> None:  # a second command, so that ``run`` is a subcommand
        pass

    return app


def _printed(which: str) -> str:
    result = CliRunner().invoke(_app(), ["run", which])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    return result.stderr.removeprefix("error: ").rstrip("\n")


def test_python_callers_read_parameters() -> None:
    assert str(ERRORS["both"]) == "give both src_file and tgt_file"
    assert ERRORS["both"].argument == "src_file" and ERRORS["both"].arguments == (
        "src_file",
        "tgt_file",
    )
    assert str(ERRORS["argument"]) == "batch_tokens must be an integer >= 1, not 0"
    assert str(ERRORS["values"]) == (
        "retry with device='cpu', overwrite=True, optimize=False, layers=(8, -1) or "
        "data_dir='/data/my folder'"
    )
    assert str(ERRORS["input"]) == "/tmp/{out}/x.npy: out is an input; {out_dir} too"
    assert str(ERRORS["plain"]) == "a {brace} that names no parameter"
    assert str(ArgumentError("src_texts[1]", "must be a str")) == "src_texts[1] must be a str"


def test_the_cli_shows_the_options_of_the_running_command() -> None:
    assert _printed("both") == "give both --src-file and --tgt-file"
    assert _printed("argument") == "--batch-tokens must be an integer >= 1, not 0"
    assert _printed("values") == (
        "retry with --device cpu, --overwrite, --no-optimize, --layers 8,-1 or "
        "--data-dir '/data/my folder'"
    )
    # Library parameters the CLI spells otherwise; one it does not have stays as in Python.
    assert _printed("renamed") == "use --tgt en; --out is taken"
    assert _printed("unknown") == "ort_options does not apply to --backend torch"
    # A path is the user's: a "{out}" in it is no parameter.
    assert _printed("input") == "/tmp/{out}/x.npy: --out is an input; {out_dir} too"
    assert _printed("plain") == "a {brace} that names no parameter"


def test_errors_keep_the_parameters_they_name_through_pickling() -> None:
    for error in ERRORS.values():
        copy = pickle.loads(pickle.dumps(error))
        assert copy.arguments == error.arguments and str(copy) == str(error)
