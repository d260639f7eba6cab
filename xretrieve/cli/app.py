"""The ``xretrieve`` console script: one typer app, each command registered by its module."""

from __future__ import annotations

import typer

from xretrieve.cli import bench, embed, evaluate, export, index, mine, retrieval, train, xtreme
from xretrieve.cli.common import Command

app = typer.Typer(
    name="xretrieve",
    help="Export, embed, mine bitext and evaluate multilingual sentence encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (mine, retrieval, export, embed, train, bench, evaluate, index, xtreme):
    module.register(app)
for command in app.registered_commands:
    command.cls = Command  # typer fills in its own TyperCommand at registration


def main() -> None:
    app()


if __name__ == "__main__":
    main()
