"""The one output guard: ``check_output_path`` refuses, before any work, an output that cannot
or may not be written (an input, an ancestor of one or of the working directory, a user's
directory that the command did not write, ...). ``OutputOwner`` is how a command recognises
its own earlier output (by its manifest), which it may replace."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xretrieve.core.errors import InputError, parameters_named


@dataclass(frozen=True)
class OutputOwner:
    """How a command recognises a directory as its own earlier output, which it may replace:
    ``command`` names it in messages ("index build"; a parameter that makes it is written
    ``{name}`` and listed in ``arguments``); ``disowns(directory)`` returns None when
    ``directory`` is an earlier output of that command holding only what it writes, else the
    reason it is not (no manifest of the command's, a foreign file in it, ...)."""

    command: str
    disowns: Callable[[Path], str | None]
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Output:
    """How the guard's messages name the output: ``label`` (with ``{name}`` placeholders for
    the ``arguments`` it names)."""

    label: str
    arguments: tuple[str, ...]

    def refuse(self, path: Path, message: str, owner: OutputOwner | None = None) -> InputError:
        extra = owner.arguments if owner is not None else ()
        return InputError(path, message, arguments=(*self.arguments, *extra))


def _output(option: str) -> _Output:
    """``option``: the parameter that gives the output ("out"), or a phrase naming it as
    ``{name}`` ("{out_dir}'s work directory"), or text shown as it is (a CLI option)."""
    label = f"{{{option}}}" if option.isidentifier() else option
    return _Output(label, parameters_named(label))


def _resolved(path: Path) -> Path:
    with contextlib.suppress(OSError, RuntimeError):
        return path.resolve()
    return Path(os.path.abspath(path))


def _refuse_inputs(path: Path, inputs: Iterable[Path], output: _Output) -> None:
    """An output may not be an input, hold an input (a directory output is replaced as a
    whole), or lie inside a directory input (a model folder, an index, a shard directory,
    which would then change under the command reading it)."""
    target = _resolved(path)
    for given in inputs:
        source = _resolved(Path(given))
        same = target == source
        if not same and os.path.lexists(path) and os.path.lexists(given):
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, given)
        if same:
            raise output.refuse(
                path, f"{output.label} is an input ({given}): writing there would destroy it"
            )
        if source.is_relative_to(target):
            raise output.refuse(
                path,
                f"{output.label} holds the input {given}: writing there would destroy it; "
                "choose a directory outside the inputs",
            )
        if Path(given).is_dir() and target.is_relative_to(source):
            raise output.refuse(
                path,
                f"{output.label} lies inside the input directory {given}: writing there would "
                "change an input; choose a path outside it",
            )


def check_output_path(
    path: Path,
    *,
    directory: bool = False,
    option: str = "out",
    inputs: Iterable[Path] = (),
    owner: OutputOwner | None = None,
) -> Path:
    """The one output guard, called before any work: refuse an output that cannot or may not be
    written. Returns ``path``; raises ``InputError`` naming it and ``option``: the parameter
    that gave it (the CLI shows its option), or a phrase naming that parameter as ``{name}``.

    Every output: it is not one of ``inputs``, does not hold one, and does not lie inside a
    directory input; the nearest existing parent is a writable directory. A file output
    (``directory=False``) must not be an existing directory (an existing file is replaced
    atomically). A directory output (``directory=True``) is replaced as a whole, so it must not
    be a file, the current directory or an ancestor of it, and must be new, empty, or an earlier
    output of ``owner``'s command (``owner.disowns`` returns None); without an ``owner`` only a
    new or empty directory is accepted.

    Writability is ``os.access`` on that parent (so root passes where the permissions say no,
    as it would when writing; a read-only file system fails for everyone)."""
    path = Path(path)
    output = _output(option)
    if not path.name or path.name in (".", ".."):
        path = Path(os.path.abspath(path))
    if not directory and path.is_dir():  # said first: it may also hold the inputs
        raise output.refuse(path, f"{output.label} is a directory; give a file path in it instead")
    _refuse_inputs(path, inputs, output)
    if directory:
        _check_directory_output(path, output, owner)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    label = output.label
    if not parent.is_dir():
        raise output.refuse(path, f"cannot create {label}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise output.refuse(path, f"cannot write {label}: the directory {parent} is not writable")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise output.refuse(path, f"cannot write {label}: the directory is not writable")
    return path


def _check_directory_output(path: Path, output: _Output, owner: OutputOwner | None) -> None:
    label = output.label
    if os.path.lexists(path) and not path.is_dir():
        raise output.refuse(path, f"{label} must be a directory; this is a file")
    inside = False
    with contextlib.suppress(OSError):  # no current directory (deleted): nothing to protect
        inside = Path.cwd().resolve().is_relative_to(path.resolve())
    if inside:
        raise output.refuse(
            path,
            f"{label} is the current directory or contains it; it is replaced as a whole: "
            "give a new directory instead",
        )
    if not path.is_dir() or not any(path.iterdir()):
        return
    if owner is None:
        raise output.refuse(
            path, f"{label} is a non-empty directory: give a new or empty directory"
        )
    reason = owner.disowns(path)
    if reason is not None:
        raise output.refuse(
            path,
            f"{label} is a non-empty directory that is not an earlier {owner.command} output "
            f"({reason}): give a new or empty directory",
            owner,
        )


def lock_path(out_dir: Path) -> Path:
    """The file a command writing ``out_dir`` holds locked while it runs (``output_lock``)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.lock")


class _Replaced(Exception):
    """The lock file was removed or replaced between opening and locking it."""


@contextlib.contextmanager
def output_lock(out_dir: Path, *, job: str, option: str) -> Iterator[None]:
    """Hold ``lock_path(out_dir)`` for the block, so that two runs of ``job`` never write the
    same ``out_dir`` (the parameter ``option``) at once: ``InputError`` at once when another
    run holds it. The file is removed on the way out (while still held, so a run that opened it
    meanwhile sees it replaced and reports the run that just finished as running), and so are
    the folders above ``out_dir`` it had to create when the block fails."""
    from filelock import FileLock, Timeout

    out_dir, path = Path(out_dir), lock_path(out_dir)
    if os.path.lexists(path) and (not path.is_file() or path.stat().st_size > 0):
        raise InputError(path, f"is in the way of the {job}'s lock file: move it away")
    created = [parent for parent in out_dir.parents if not parent.exists()]

    def still_the_lock_file(fd: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return
        raise _Replaced

    lock = FileLock(str(path), timeout=0, on_acquired=still_the_lock_file)
    finished = False
    try:
        try:
            lock.acquire()  # creates the missing folders above it
        except (Timeout, _Replaced):
            raise InputError(
                out_dir,
                f"another {job} of this {{{option}}} is running (it holds {path.name}): "
                f"wait for it to finish, or choose another {{{option}}}",
                arguments=(option,),
            ) from None
        except OSError as error:
            raise InputError(path, f"cannot create the {job}'s lock file: {error}") from None
        try:
            yield
            finished = True
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            lock.release()
    finally:
        if not finished:
            for folder in created:  # deepest first; one holding anything stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
