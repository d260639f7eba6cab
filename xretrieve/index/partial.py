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

A build holds ``.{name}.lock`` beside the index directory from its first check of the work
directory to the final rename (``build_lock``): a second build of the same directory fails at
once instead of resuming the first one's live work directory. The work directory is only ever
cleared when it holds nothing but what a build writes (``PARTIAL_OUTPUT``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write, replace_directory
from xretrieve.core.integrity import file_matches
from xretrieve.core.outputs import OutputOwner, output_lock
from xretrieve.core.readers import read_json_object
from xretrieve.index.manifest import ShardRecord, is_index_file

logger = logging.getLogger(__name__)

SETTINGS = "build.json"
# The trained, empty index: the resume point after training, and what Ray tasks populate.
TRAINED = "trained.faiss"


# What a build writes into its work directory, finished or killed mid-write: the settings, the
# trained index (and its staging file), the shards and their records, the manifest, and the
# temporary files of ``atomic_write`` (``.NAME.XXXX.tmp``).
_WORK_FILE = re.compile(
    r"(build\.json|trained\.faiss(\.tmp)?|shard-\d{5,}\.(faiss|json)|manifest\.json"
    r"|\.(build\.json|shard-\d{5,}\.json|manifest\.json)\..+\.tmp)"
)


def work_directory(out_dir: Path) -> Path:
    """Where the build of ``out_dir`` keeps its partial state."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.partial")


def partial_disowns(directory: Path) -> str | None:
    """None when the non-empty ``directory`` holds only what a build writes into its work
    directory, else why not. The ``OutputOwner`` of the work directory beside ``--out``."""
    foreign = sorted(
        entry.name
        for entry in Path(directory).iterdir()
        if not (entry.is_file() and not entry.is_symlink() and _WORK_FILE.fullmatch(entry.name))
    )
    if not foreign:
        return None
    return (
        f"it holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
        "which index build does not write"
    )


PARTIAL_OUTPUT = OutputOwner("index build work directory", partial_disowns)


def build_lock(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    """``output_lock`` of an index build's ``out_dir``: a second build of it fails at once."""
    return output_lock(out_dir, job="index build", option="out_dir")


def index_shard_name(number: int) -> str:
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

    def discard_trained(self) -> None:
        self.trained_path.unlink(missing_ok=True)

    def finished_shard(self, number: int) -> ShardRecord | None:
        """The record of shard ``number`` when its file is complete and unchanged, else None."""
        record_path = (self.directory / index_shard_name(number)).with_suffix(".json")
        if not record_path.is_file():
            return None
        try:
            record = ShardRecord(**read_json_object(record_path))
        except (InputError, TypeError):
            return None
        complete = file_matches(self.directory / record.file, record.bytes, record.sha256)
        return record if complete else None

    def record_shard(self, number: int, record: ShardRecord) -> None:
        """Mark shard ``number`` (already written under ``record.file``) complete."""
        with atomic_write((self.directory / index_shard_name(number)).with_suffix(".json")) as f:
            json.dump(asdict(record), f)

    def finish(self, out_dir: Path) -> None:
        """Drop the resume state and make the work directory ``out_dir`` (an existing
        ``out_dir`` is replaced)."""
        for path in self.directory.iterdir():
            if not is_index_file(path.name):
                path.unlink()
        replace_directory(self.directory, Path(out_dir))


def open_partial(out_dir: Path, settings: dict[str, Any], resume: bool) -> PartialBuild:
    """The work directory for building ``out_dir`` with ``settings`` (JSON-able): the one an
    interrupted build of the same settings left (when ``resume``), else a fresh one. The caller
    holds ``build_lock(out_dir)`` and has checked the work directory with ``PARTIAL_OUTPUT``."""
    directory = work_directory(out_dir)
    settings = json.loads(json.dumps(settings))
    settings_path = directory / SETTINGS
    if directory.exists():
        try:
            previous = read_json_object(settings_path)
        except InputError:
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
            "resume=False" if not resume else "other settings or changed sources",
        )
        _clear(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(settings_path) as f:
        json.dump(settings, f, indent=1)
    return PartialBuild(directory)


def _clear(directory: Path) -> None:
    """Delete what a build wrote into ``directory``; ``InputError`` if anything else is there."""
    reason = partial_disowns(directory)
    if reason is not None:
        raise InputError(directory, f"not cleared: {reason}")
    for entry in directory.iterdir():
        entry.unlink()
