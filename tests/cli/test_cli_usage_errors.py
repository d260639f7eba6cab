"""A command line that does not parse is bad input like any other: exit code 2 and one line on
stderr naming the option or command, not typer's usage block. Values outside an option's
choices or range, unknown options and commands, missing options and missing option values,
for top-level commands and for the ``index`` and ``xtreme`` groups."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from xretrieve.cli.app import app


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["mine", "--src", "de", "--tgt", "en", "--mode", "foo"], "'--mode'"),
        (["mine", "--k", "0"], "'--k'"),
        (["mine", "--bogus"], "--bogus"),
        (["bucc", "--langs", "de"], "'--data-dir'"),
        (["tatoeba", "--data-dir"], "'--data-dir'"),
        (["embed"], "MODEL"),
        (["xtreme", "predict", "--device", "tpu", "ckpt"], "'--device'"),
        (["xtreme", "nope"], "'nope'"),
        (["index", "build", "--nlist", "x", "a.npy"], "--nlist"),
        (["index", "nope"], "'nope'"),
        (["nope"], "'nope'"),
    ],
)
def test_a_command_line_that_does_not_parse_is_one_line_and_exit_2(args, named) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and named in lines[0], lines[0]
    assert "--help" in lines[0] and "Usage" not in result.output


def test_help_is_still_help() -> None:
    result = CliRunner().invoke(app, ["mine", "--help"])
    assert result.exit_code == 0 and "Usage: xretrieve mine [OPTIONS]" in result.stdout
