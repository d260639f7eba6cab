"""How the app is put together: every command and sub-command is a module-level function of
its command module (importable and testable, no closure inside a ``register()``), wrapped by
``reports_errors``, shown with the plain-usage ``Command`` class; every command module is used;
and the walk over the app sees every command ``xretrieve --help`` lists."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import typer.main

from xretrieve.cli.app import app
from xretrieve.cli.common import Command

CLI = Path(__file__).resolve().parents[2] / "xretrieve" / "cli"
NOT_COMMANDS = {"__init__", "app", "common"}


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, object]]:
    """(``"index build"``, its CommandInfo) for every command of ``group`` and of its groups."""
    for info in group.registered_commands:
        yield " ".join((*prefix, info.name)), info
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, (*prefix, sub.name))


def _click_commands(command, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    for name, sub in command.commands.items():
        if hasattr(sub, "commands"):
            yield from _click_commands(sub, (*prefix, name))
        else:
            yield " ".join((*prefix, name))


COMMANDS = dict(_commands(app))


def test_the_walk_sees_every_command() -> None:
    assert sorted(COMMANDS) == sorted(_click_commands(typer.main.get_command(app)))
    assert {"mine", "bucc", "tatoeba", "embed", "index build", "xtreme score"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_is_a_module_level_function(name: str) -> None:
    callback = COMMANDS[name].callback
    assert "<locals>" not in callback.__qualname__, callback.__qualname__
    assert callback.__module__.startswith("xretrieve.cli."), callback.__module__
    module = importlib.import_module(callback.__module__)
    assert getattr(module, callback.__qualname__) is callback
    assert callable(getattr(callback, "__wrapped__", None)), "not wrapped by reports_errors"
    assert COMMANDS[name].cls is Command


def test_every_command_module_is_used_and_registers_nothing_itself() -> None:
    modules = {path.stem for path in CLI.glob("*.py")} - NOT_COMMANDS
    used = {info.callback.__module__.rpartition(".")[2] for info in COMMANDS.values()}
    assert used == modules
    for name in modules:
        assert not hasattr(importlib.import_module(f"xretrieve.cli.{name}"), "register"), name
