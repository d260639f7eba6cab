"""What a unit's results were computed on: the sizes and sha256 of its data files, and a short
hash of those, recorded with every result row so that a resumed evaluation never keeps results
of data that has changed since."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from xretrieve.core.integrity import file_sha256


def data_fingerprint(paths: Iterable[Path], data_dir: Path) -> dict[str, dict[str, int | str]]:
    """``{path relative to data_dir: {"size", "sha256"}}`` of the files of ``paths`` that exist
    (a missing one is left out: its absence is part of the fingerprint)."""
    data_dir = Path(data_dir)
    fingerprint: dict[str, dict[str, int | str]] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            continue
        try:
            name = path.relative_to(data_dir).as_posix()
        except ValueError:
            name = str(path)
        fingerprint[name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return fingerprint


def data_hash(paths: Iterable[Path], data_dir: Path) -> str:
    """16 hex digits of sha256 over the ``data_fingerprint`` of ``paths`` (canonical JSON):
    equal exactly when the same files exist with the same bytes."""
    fingerprint = data_fingerprint(paths, data_dir)
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
