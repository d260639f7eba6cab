"""The library's own exception types; the CLI turns them into a message and a non-zero exit.

A message names the parameters of the call it is about, never the CLI's options: a parameter is
written ``{name}`` in it (``{name=value}`` for a value to pass, as a Python literal) and listed in
the error's ``arguments``. ``str(error)`` writes ``name`` (``name=value``), what a Python caller
passed; ``error.render(show)`` writes each through ``show(name, value)``, so that the CLI can
show its option instead (``--src-file``, ``--device cpu``, ``--no-optimize``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# A parameter named in a message: ``{name}`` or ``{name=value}`` (value: a Python literal).
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:=([^{}]*))?\}")

# ``show(name, value)``: how a parameter named in a message is written (``value`` is None for a
# bare ``{name}``).
ShowParameter = Callable[[str, "str | None"], str]


def python_parameter(name: str, value: str | None) -> str:
    """A parameter as a Python caller writes it: ``name``, or ``name=value``."""
    return name if value is None else f"{name}={value}"


def parameters_named(template: str) -> tuple[str, ...]:
    """The parameters ``template`` (a message the library writes, no user text in it) names as
    ``{name}`` or ``{name=value}``, in order, each once."""
    return tuple(dict.fromkeys(match.group(1) for match in _PARAMETER.finditer(template)))


def fill_parameters(template: str, arguments: Sequence[str], show: ShowParameter) -> str:
    """``template`` with each ``{name}``/``{name=value}`` of a name in ``arguments`` written by
    ``show``; other braces (quoted user text, config syntax) stay as they are."""

    def replace(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        return show(name, value) if name in arguments else match.group(0)

    return _PARAMETER.sub(replace, template) if arguments else template


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
    pickling would call ``cls(*self.args)``, which fails for ``InputError(path, message)``.

    ``arguments``: the parameters the message names as ``{name}`` (see the module doc); none by
    default."""

    arguments: tuple[str, ...] = ()

    def __init__(self, *args: Any, arguments: Sequence[str] = ()) -> None:
        super().__init__(*args)
        if arguments:
            self.arguments = tuple(arguments)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)

    def template(self) -> str:
        """The message with its parameters as ``{name}`` placeholders."""
        return super().__str__()

    def render(self, show: ShowParameter = python_parameter) -> str:
        """The message, each parameter it names written by ``show(name, value)``."""
        return fill_parameters(self.template(), self.arguments, show)

    def __str__(self) -> str:
        return self.render()


class InputError(XRetrieveError):
    """Bad input data: names the file, the 1-based line when known, and what was expected.
    ``arguments``: the parameters ``message`` names as ``{name}`` (the output guard's ``out``)."""

    def __init__(
        self,
        path: Path | str | None,
        message: str,
        line: int | None = None,
        *,
        arguments: Sequence[str] = (),
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.detail = message
        super().__init__(f"{self._where()}{message}", arguments=arguments)

    def _where(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "

    def render(self, show: ShowParameter = python_parameter) -> str:
        # The path is the user's: a "{name}" in it is not a parameter.
        return self._where() + fill_parameters(self.detail, self.arguments, show)


class MissingDependencyError(XRetrieveError):
    """An optional heavy dependency is not installed; the message says what to install."""

    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install {package}")


class ArgumentError(XRetrieveError):
    """A bad argument to a library function, or arguments that do not fit together:
    ``argument`` names the parameter, ``detail`` says what it takes and what it got. The message
    is the parameter and the detail ("k must be a positive integer, not 0"), or, when the detail
    names the parameter itself as ``{argument}``, the detail alone ("give both {src_file} and
    {tgt_file}"). ``others``: further parameters the detail names as ``{name}``."""

    def __init__(self, argument: str, detail: str, *, others: Sequence[str] = ()) -> None:
        super().__init__(argument, detail, arguments=(argument, *others))
        self.argument = argument
        self.detail = detail

    @classmethod
    def from_template(cls, template: str) -> ArgumentError:
        """Arguments that do not fit together, as ``template`` (the library's own text, no user
        text in it) names them: ``{name}`` each; the first named is ``argument``."""
        names = parameters_named(template)
        return cls(names[0], template, others=names[1:])

    def template(self) -> str:
        if any(match.group(1) == self.argument for match in _PARAMETER.finditer(self.detail)):
            return self.detail
        if not self.argument.isidentifier():  # an item of a parameter: "src_texts[1]"
            return f"{self.argument} {self.detail}"
        return f"{{{self.argument}}} {self.detail}"
