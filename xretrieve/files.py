"""Atomic writes: output appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from xretrieve.errors import InputError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def default_permissions(path: Path) -> None:
    """Give ``path`` the mode a plain ``open()`` (file) or ``mkdir()`` (directory) would have
    under the process umask; for a directory, every file and folder in it too. ``mkstemp`` and
    ``mkdtemp`` create 0600/0700, and safetensors writes its files 0600: outputs are shared like
    any other file (0644 under the usual umask 022)."""
    umask = _umask()
    path = Path(path)
    if not path.is_dir():
        os.chmod(path, 0o666 & ~umask)
        return
    os.chmod(path, 0o777 & ~umask)
    for root, dirs, names in os.walk(path):
        for names_here, mode in ((dirs, 0o777), (names, 0o666)):
            for name in names_here:
                entry = os.path.join(root, name)
                if not os.path.islink(entry):  # chmod would change the link's target
                    os.chmod(entry, mode & ~umask)


def check_output_path(path: Path, *, directory: bool = False, option: str = "--out") -> Path:
    """Refuse, before any work, an output that cannot be written: ``path`` is an existing
    directory (for a file output) or an existing file (for a ``directory`` output), a directory
    output is the current directory or contains it (it is replaced as a whole), or the nearest
    existing parent is a file or not writable. Returns ``path``; raises ``InputError`` naming it.

    Writability is ``os.access`` on that parent (so root passes where the permissions say no,
    as it would when writing; a read-only file system fails for everyone)."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        path = Path(os.path.abspath(path))
    if directory:
        inside = False
        if path.exists() and not path.is_dir():
            raise InputError(path, f"{option} must be a directory; this is a file")
        with contextlib.suppress(OSError):  # no current directory (deleted): nothing to protect
            inside = Path.cwd().resolve().is_relative_to(path.resolve())
        if inside:
            raise InputError(
                path,
                f"{option} is the current directory or contains it; it is replaced as a whole: "
                "give a new directory (or an earlier export) instead",
            )
    elif path.is_dir():
        raise InputError(path, f"{option} is a directory; give a file path in it instead")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(path, f"cannot create {option}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write {option}: the directory {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` with ``os.replace``,
    on any exception (KeyboardInterrupt included) it is removed and ``path`` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if "b" in mode:
        encoding = None
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        default_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file atomically."""
    with atomic_write(Path(path), "wb") as handle:
        np.save(handle, array)


def replace_directory(staged: Path, path: Path) -> None:
    """Make the complete directory ``staged`` (beside ``path``) ``path``, with default
    permissions; an existing ``path`` is replaced (renamed aside, then removed)."""
    default_permissions(staged)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(staged, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, path)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it becomes ``path`` (an existing
    ``path`` is replaced), on failure it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
