"""Content digests of cached files, so that a damaged cache is rebuilt instead of trusted.

A record (JSON) lists, for files in its own directory, their size, modification time and
sha256, taken when the cache wrote them. Verifying is cheap in the common case: a file whose
size and mtime are those recorded is taken as unchanged; only a file whose size or mtime
changed is hashed again (then its record is refreshed if the content is still the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.readers import read_json_object

logger = logging.getLogger(__name__)

# The record of a whole cache directory (an export, the converted default model). Its suffix is
# not one that ``cache.content_hash`` covers, so refreshing it never changes a checkpoint's key.
DIRECTORY_RECORD = ".xretrieve.sha256"
_VERSION = 1


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_matches(path: Path, size: int, sha256: str) -> bool:
    """Whether ``path`` is a file of ``size`` bytes with digest ``sha256`` (hashed only when
    the size agrees)."""
    path = Path(path)
    return path.is_file() and path.stat().st_size == size and file_sha256(path) == sha256


def content_unchanged(path: Path, stat: os.stat_result, mtime_ns: int | None, sha256: str) -> bool:
    """Whether ``path``, whose ``stat`` shows the recorded size, still holds the recorded
    content: taken as unchanged when its modification time is the recorded ``mtime_ns``, else
    (or with no time recorded: None) hashed and compared with ``sha256``."""
    return stat.st_mtime_ns == mtime_ns or file_sha256(path) == sha256


def _entry(path: Path, sha256: str | None = None) -> dict[str, int | str]:
    stat = path.stat()
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256 if sha256 is not None else file_sha256(path),
    }


def write_record(record: Path, files: Iterable[Path]) -> None:
    """Hash ``files`` (all in ``record``'s directory) and write ``record`` atomically."""
    record = Path(record)
    entries = {Path(file).name: _entry(Path(file)) for file in files}
    _write(record, entries)


def write_directory_record(directory: Path) -> Path:
    """Record every regular file of ``directory`` (top level) in ``directory/DIRECTORY_RECORD``."""
    directory = Path(directory)
    files = [
        path
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != DIRECTORY_RECORD
    ]
    write_record(directory / DIRECTORY_RECORD, files)
    return directory / DIRECTORY_RECORD


def _write(record: Path, entries: dict[str, dict[str, int | str]]) -> None:
    with atomic_write(record) as handle:
        json.dump({"version": _VERSION, "files": entries}, handle, indent=1, sort_keys=True)
        handle.write("\n")


def verify_record(record: Path) -> str | None:
    """None when every file ``record`` lists is present with its recorded content; otherwise
    why not (no or unreadable record, a file missing, a file whose content changed)."""
    record = Path(record)
    if not record.exists():
        return f"no integrity record {record.name}"
    try:
        entries = read_json_object(record).get("files")
    except InputError:
        entries = None
    if not isinstance(entries, dict) or not entries:
        return f"unreadable integrity record {record.name}"
    refreshed = False
    for name, entry in entries.items():
        path = record.parent / name
        try:
            stat = path.stat()
            size, mtime, sha256 = int(entry["size"]), int(entry["mtime_ns"]), str(entry["sha256"])
        except FileNotFoundError:
            return f"{name} is missing"
        except (KeyError, TypeError, ValueError):
            return f"unreadable integrity record {record.name}"
        if stat.st_size != size:
            return f"{name} has {stat.st_size} bytes, {size} were written"
        if not content_unchanged(path, stat, mtime, sha256):
            return f"{name} changed since it was written (sha256 differs)"
        if stat.st_mtime_ns == mtime:
            continue
        entries[name] = {"size": size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
        refreshed = True
    if refreshed:
        # Same content, new mtime (copied, touched): remember it, so it is not hashed again.
        with contextlib.suppress(OSError):
            _write(record, entries)
    return None


def remove_files(paths: Iterable[Path]) -> None:
    """Delete ``paths`` that exist (a damaged cache entry); others are ignored."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
