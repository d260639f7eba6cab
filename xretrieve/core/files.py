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
