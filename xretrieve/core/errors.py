"""The library's own exception types; the CLI turns them into a message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _rebuild(cls: type[XRetrieveError], args: tuple, state: dict[str, Any]) -> XRetrieveError:
    """Unpickle an ``XRetrieveError`` without calling its ``__init__`` (see ``__reduce__``)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class XRetrieveError(Exception):
    """Base class of every error the library raises on purpose (bad input, bad config, ...).

    Picklable with its attributes whatever a subclass's ``__init__`` takes: an error raised in a
    Ray actor or task reaches the driver as itself (``ray_cluster.get_result``). Python's own
    pickling would call ``cls(*self.args)``, which fails for ``InputError(path, message)``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


class InputError(XRetrieveError):
    """Bad input data: names the file, the 1-based line when known, and what was expected."""

    def __init__(self, path: Path | str | None, message: str, line: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.detail = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


class MissingDependencyError(XRetrieveError):
    """An optional heavy dependency is not installed; the message says what to install."""

    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install {package}")


class ArgumentError(XRetrieveError):
    """A bad argument to a library function: ``argument`` names the parameter, ``detail`` says
    what it takes and what it got ("k must be a positive integer, not 0")."""

    def __init__(self, argument: str, detail: str) -> None:
        super().__init__(argument, detail)
        self.argument = argument
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.argument} {self.detail}"
