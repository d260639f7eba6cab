"""What a unit's results were computed on: the sizes and sha256 of its data files, recorded in
``run.json`` so that a resumed evaluation never keeps results of data that has changed since."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xretrieve.integrity import file_sha256


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
