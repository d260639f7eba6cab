"""The ``--out`` directory of ``evaluate``: the names of what it writes there, and how a later run
recognises the directory as its own (``RESULTS_OUTPUT``, the ``OutputOwner`` of the shared output
guard). A run resumes in its directory and rewrites only these files; anything else in it means
the directory is not (only) an evaluate output, and it is refused."""

from __future__ import annotations

from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.core.outputs import OutputOwner
from xretrieve.core.readers import iter_jsonl

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
CSV_FILE = "results.csv"
LEADERBOARD_FILE = "leaderboard.md"
GROUPS_FILE = "groups.csv"
BOOTSTRAP_DIR = "bootstrap"
PLOTS_DIR = "plots"
_FILES = (RUN_FILE, RESULTS_FILE, CSV_FILE, LEADERBOARD_FILE, GROUPS_FILE)
_DIRS = (BOOTSTRAP_DIR, PLOTS_DIR)


def _is_results_entry(entry: Path) -> bool:
    """A file or folder evaluate writes, or the temporary file of an interrupted atomic write
    of one (``.results.csv.XXXX.tmp``)."""
    name = entry.name
    if entry.is_dir() and not entry.is_symlink():
        return name in _DIRS
    if not entry.is_file():
        return False
    return name in _FILES or (
        name.endswith(".tmp") and name.startswith(tuple(f".{known}." for known in _FILES))
    )


def _holds_rows(path: Path) -> bool:
    """Whether ``path`` is a results.jsonl whose first line is a result row."""
    from xretrieve.evaluation.results import row_from_dict

    try:
        _, first = next(iter_jsonl(path))
        row_from_dict(first)
    except (InputError, StopIteration, ValueError, KeyError, TypeError):
        return False
    return True


def results_disowns(directory: Path) -> str | None:
    """None when the non-empty ``directory`` is an earlier ``evaluate --out`` (it holds a
    run.json, or a results.jsonl of result rows) holding only what evaluate writes, else why
    it is not. The ``OutputOwner`` of ``evaluate --out``."""
    directory = Path(directory)
    if not (directory / RUN_FILE).is_file() and not _holds_rows(directory / RESULTS_FILE):
        return f"no {RUN_FILE} or {RESULTS_FILE} of evaluate"
    foreign = sorted(entry.name for entry in directory.iterdir() if not _is_results_entry(entry))
    if foreign:
        return (
            f"it also holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            "which evaluate does not write"
        )
    return None


RESULTS_OUTPUT = OutputOwner("evaluate", results_disowns)
