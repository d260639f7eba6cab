"""The ``xretrieve`` console script: one typer app composed of the command modules, each
command a module-level function, each command group (``index``, ``xtreme``) its own app."""

from __future__ import annotations

import typer

from xretrieve.cli import bench, bucc, embed, evaluate, export, index, mine, tatoeba, train, xtreme
from xretrieve.cli.common import Command, CommandGroup

app = typer.Typer(
    name="xretrieve",
    help="Export, embed, mine bitext and evaluate multilingual sentence encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=CommandGroup,
)

# In the order ``xretrieve --help`` lists them.
app.command("mine", cls=Command)(mine.mine_command)
app.command("bucc", cls=Command)(bucc.bucc_command)
app.command("tatoeba", cls=Command)(tatoeba.tatoeba_command)
app.command("export", cls=Command)(export.export_command)
app.command("embed", cls=Command)(embed.embed_command)
app.command("train", cls=Command)(train.train_command)
app.command("bench", cls=Command)(bench.bench_command)
app.command("evaluate", cls=Command)(evaluate.evaluate_command)
app.add_typer(index.app, name="index", cls=CommandGroup)
app.add_typer(xtreme.app, name="xtreme", cls=CommandGroup)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
