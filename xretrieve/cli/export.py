"""Placeholder while the command is being written; replaced by its implementation."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""
