"""Resumable index builds: the hidden work directory beside the index directory.

``build_index`` works in ``.{name}.partial`` next to the index directory it builds. It records
the build's settings and the sources' hashes first (``build.json``), the trained empty index
after training (``trained.faiss``), and each finished shard (``shard-NNNNN.faiss``, then its
record ``shard-NNNNN.json``, written to a temporary name and renamed, so a record means a
complete shard). An interrupted build (Ctrl-C, SIGTERM, a crash, a lost machine) leaves the work
directory behind; the next build of the same directory with the same settings and unchanged
sources continues from it: training is not redone and finished shards are kept (checked by size
and SHA-256). Other settings or changed sources start afresh. On success the work directory
becomes the index directory in one rename, so the index directory is never half-written.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xretrieve.files import atomic_write, replace_directory
from xretrieve.index.manifest import ShardRecord
from xretrieve.integrity import file_matches

logger = logging.getLogger(__name__)

SETTINGS = "build.json"
# The trained, empty index: the resume point after training, and what Ray tasks populate.
TRAINED = "trained.faiss"


def work_directory(out_dir: Path) -> Path:
    """Where the build of ``out_dir`` keeps its partial state."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.partial")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.faiss"


@dataclass(frozen=True)
class PartialBuild:
    """The work directory of one build and what it already holds."""

    directory: Path

    @property
    def trained_path(self) -> Path:
        return self.directory / TRAINED

    def has_trained(self) -> bool:
        return self.trained_path.is_file()

    def finished_shard(self, number: int) -> ShardRecord | None:
        """The record of shard ``number`` when its file is complete and unchanged, else None."""
        record_path = (self.directory / shard_name(number)).with_suffix(".json")
        if not record_path.is_file():
            return None
        try:
            record = ShardRecord(**json.loads(record_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None
        complete = file_matches(self.directory / record.file, record.bytes, record.sha256)
        return record if complete else None

    def record_shard(self, number: int, record: ShardRecord) -> None:
        """Mark shard ``number`` (already written under ``record.file``) complete."""
        with atomic_write((self.directory / shard_name(number)).with_suffix(".json")) as f:
            json.dump(asdict(record), f)

    def finish(self, out_dir: Path) -> None:
        """Drop the resume state and make the work directory ``out_dir`` (an existing
        ``out_dir`` is replaced)."""
        for path in self.directory.glob("shard-*.json"):
            path.unlink()
        for name in (SETTINGS, TRAINED):
            (self.directory / name).unlink(missing_ok=True)
        replace_directory(self.directory, Path(out_dir))


def open_partial(out_dir: Path, settings: dict[str, Any], resume: bool) -> PartialBuild:
    """The work directory for building ``out_dir`` with ``settings`` (JSON-able): the one an
    interrupted build of the same settings left (when ``resume``), else a fresh one."""
    directory = work_directory(out_dir)
    settings = json.loads(json.dumps(settings))
    settings_path = directory / SETTINGS
    if directory.exists():
        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if resume and previous == settings:
            partial = PartialBuild(directory)
            logger.warning(
                "resuming the interrupted build in %s (%s)",
                directory,
                "trained index kept" if partial.has_trained() else "not trained yet",
            )
            return partial
        logger.warning(
            "discarding the partial build in %s (%s)",
            directory,
            "--no-resume" if not resume else "other settings or changed sources",
        )
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir()
    with atomic_write(settings_path) as f:
        json.dump(settings, f, indent=1)
    return PartialBuild(directory)
