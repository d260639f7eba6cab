"""Progress reporting without a UI dependency: the library calls a callback, the CLI draws bars."""

from __future__ import annotations

from typing import Protocol


class ProgressCallback(Protocol):
    """Called as work advances: ``stage`` names the step, ``done`` counts finished units
    (cumulative, not a delta) and ``total`` is the number of units when known."""

    def __call__(self, stage: str, done: int, total: int | None) -> None: ...


def no_progress(stage: str, done: int, total: int | None) -> None:
    """A ProgressCallback that reports nothing."""
