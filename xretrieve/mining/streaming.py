"""Margin mining through indexes that streams: no process holds the neighbour lists.

``mine_streamed`` runs the steps of ``xretrieve.mining.through_index.mine_indexes`` (search
both ways, margins, ``Mode`` selection) with its intermediate results in files of a work
directory (``StreamConfig.directory``, shared storage on a cluster), and returns the pairs as
parts (``xretrieve.mining.pair_parts``) that equal ``select_pairs``' result bit for bit:

1. Search: each query block's k neighbours are reduced where they are found (a Ray actor, or
   this process) to a candidate block (``xretrieve.mining.candidates``: sims, candidate
   positions and the row's mean similarity).
2. Means: each side's per-row means, gathered from the blocks (n float32 per side).
3. Scores: parts of consecutive blocks are scored against the other side's means and their best
   candidates written sorted (``PartScoring``; Ray tasks, or this process).
4. Selection: the sorted parts are merged in a stream and the mode applied
   (``xretrieve.mining.stream_select``); the pairs are written in parts with a manifest.

Memory: the search holds a query block, the scoring a part, the selection a bounded buffer of
each part plus (``max``) one bit per row of each side; files are memory-mapped or read in
pieces. Every file is written atomically, so a rerun with the same inputs and settings keeps
what is complete (blocks, means, parts, finished pair parts) and continues; with other inputs
or settings it starts again. ``mining.json`` records them (the ``OutputOwner`` recognises the
directory by it).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.integrity import file_sha256
from xretrieve.core.outputs import OutputOwner, check_output_path, output_lock
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.readers import read_json_object
from xretrieve.index.manifest import MANIFEST
from xretrieve.index.search import (
    SearchRequest,
    StreamingSearch,
    query_blocks,
)
from xretrieve.mining.candidates import (
    BEST_LOOKUP,
    EDGE,
    CandidateWriter,
    Direction,
    PartScoring,
    best_name,
    block_name,
    candidate_dtype,
    complete_npy,
    id_dtype,
    means_name,
    part_name,
    positions_name,
    write_best_lookup,
    write_means,
    write_positions,
)
from xretrieve.mining.margin import Margin, Mode
from xretrieve.mining.pair_parts import (
    PAIRS_MANIFEST,
    PairParts,
    PairPartWriter,
    read_pair_parts,
    resume_point,
)
from xretrieve.mining.stream_select import SortedPart, Taken, merged_edges, select_edges

logger = logging.getLogger(__name__)

WORK_MANIFEST = "mining.json"
FORMAT = "xretrieve-streamed-mining"
VERSION = 1

# What streamed mining writes into its directory (and the temporary files of a killed write).
_OWN_FILE = re.compile(
    r"(fwd|bwd)-(block-\d{6}|part-\d{5}|best-\d{5})\.npy|(src|tgt)-(means|positions)\.npy"
    r"|bwd-best\.npy|pairs-\d{5}\.npy|pairs\.json|mining\.json"
)
# Bytes of memory per neighbour-list entry that the in-memory path holds at its peak (see
# ``in_memory_bytes``): fitted on benchmarks/bench_streaming.py (500k x 500k, k = 16, 64
# candidates: 3.0 GiB above the process's baseline; 100k x 100k: 0.62 GiB).
_BYTES_PER_CANDIDATE = 88
_BYTES_PER_NEIGHBOUR = 28


class Streaming(str, enum.Enum):
    """Whether mining through indexes streams: ``auto`` when the neighbour lists would not fit
    in memory (``lists_fit_in_memory``) or a work directory is given; ``on``; ``off``."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class StreamConfig:
    """Where and in what pieces streamed mining works. ``directory``: its files (shared storage
    on a cluster; a rerun resumes there); ``part_rows``: query rows per scored part (rounded
    to whole search blocks); ``pairs_per_part``: pairs per output part; ``merge_edges``: edges
    the selection holds, over all parts, per merge step; ``keep_candidates``: keep the
    candidate blocks, means and scored parts once the pairs are complete (else removed)."""

    directory: Path
    part_rows: int = 1 << 20
    pairs_per_part: int = 1 << 20
    merge_edges: int = 1 << 23
    keep_candidates: bool = False

    def __post_init__(self) -> None:
        for name in ("part_rows", "pairs_per_part", "merge_edges"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(name, f"must be a positive integer, got {value!r}")


def is_stream_file(name: str) -> bool:
    """Whether ``name`` is a file streamed mining writes, or the temporary file of one that a
    killed write left (``.NAME.XXXXXXXX.tmp``)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:-4].rsplit(".", 1)[0]
    return _OWN_FILE.fullmatch(name) is not None


def stream_disowns(directory: Path) -> str | None:
    """None when the non-empty ``directory`` was written by streamed mining and holds only what
    it writes, else why not: the ``OutputOwner`` of ``StreamConfig.directory``."""
    directory = Path(directory)
    if not _is_work_directory(directory):
        return f"no {WORK_MANIFEST} of streamed mining"
    foreign = sorted(
        e.name for e in directory.iterdir() if not (e.is_file() and is_stream_file(e.name))
    )
    if foreign:
        more = " ..." if len(foreign) > 5 else ""
        return f"it also holds {', '.join(foreign[:5])}{more}, which streamed mining does not write"
    return None


STREAM_OUTPUT = OutputOwner("mine {work_dir}", stream_disowns, arguments=("work_dir",))


def _is_work_directory(directory: Path) -> bool:
    path = directory / WORK_MANIFEST
    if not path.is_file():
        return False
    try:
        return read_json_object(path).get("format") == FORMAT
    except InputError:
        return False


def in_memory_bytes(requests: Sequence[SearchRequest], wanted: Sequence[int]) -> int:
    """Peak memory of mining ``requests`` (both directions) in memory: while a direction is
    searched its candidate lists (rows x ``wanted``, sims and ids, a running and a new list and
    their merge), then the kept lists of both directions and ``select_pairs``' scores."""
    searched = max(r.query_rows.size * w for r, w in zip(requests, wanted, strict=True))
    kept = sum(r.query_rows.size * r.k for r in requests)
    return _BYTES_PER_CANDIDATE * searched + _BYTES_PER_NEIGHBOUR * kept


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable``; else the free pages)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as meminfo:
            line = next(x for x in meminfo if x.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def lists_fit_in_memory(requests: Sequence[SearchRequest], wanted: Sequence[int]) -> bool:
    """Whether the in-memory path's lists (``in_memory_bytes``) fit in half the available
    memory; the streaming path runs otherwise."""
    return in_memory_bytes(requests, wanted) <= available_memory() // 2


@dataclass(frozen=True)
class _Plan:
    """The blocks and parts of one direction: ``blocks`` (start, stop) query positions;
    ``parts`` the block numbers of each scored part."""

    direction: Direction
    request: SearchRequest
    blocks: list[tuple[int, int]]
    parts: list[tuple[int, ...]]

    @property
    def rows(self) -> int:
        return int(self.request.query_rows.size)


def _plan(direction: Direction, request: SearchRequest, part_rows: int) -> _Plan:
    blocks = query_blocks(request.query_rows, request.config.block_rows)
    per_part = max(1, part_rows // request.config.block_rows)
    numbers = range(len(blocks))
    parts = [tuple(numbers[i : i + per_part]) for i in range(0, len(blocks), per_part)]
    return _Plan(direction, request, blocks, parts)


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()


def _settings(
    forward: SearchRequest, backward: SearchRequest, wanted: Sequence[int], margin: Margin,
    mode: Mode, stream: StreamConfig,
) -> dict[str, Any]:  # fmt: skip
    """What the files of a run depend on: a rerun with other settings starts again."""
    config = forward.config
    return {
        "indexes": [
            {
                "directory": str(r.database.directory.resolve()),
                "manifest_sha256": file_sha256(r.database.directory / MANIFEST),
                "nprobe": r.database.nprobe(config.nprobe),
                "queries": _rows_digest(r.query_rows),
                "k": r.k,
                "wanted": w,
            }
            for r, w in zip((forward, backward), wanted, strict=True)
        ],
        "block_rows": config.block_rows,
        "rescore": config.rescore,
        "margin": margin.value,
        "mode": mode.value,
        "part_rows": stream.part_rows,
        "pairs_per_part": stream.pairs_per_part,
    }


def _start(directory: Path, settings: dict[str, Any]) -> None:
    """Keep ``directory``'s files when ``mining.json`` records ``settings``; else remove what
    an earlier run wrote and record them."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WORK_MANIFEST
    if path.is_file():
        with contextlib.suppress(InputError):
            data = read_json_object(path)
            if data.get("version") == VERSION and data.get("settings") == settings:
                return
    remove_stream_files(directory)
    with atomic_write(path) as handle:
        json.dump({"format": FORMAT, "version": VERSION, "settings": settings}, handle, indent=1)
        handle.write("\n")


def remove_stream_files(directory: Path, keep: Sequence[str] = ()) -> None:
    """Delete what streamed mining wrote into ``directory`` (but ``keep``), nothing else."""
    for entry in Path(directory).iterdir():
        if entry.is_file() and is_stream_file(entry.name) and entry.name not in keep:
            entry.unlink(missing_ok=True)


def _remove_temporary(directory: Path) -> None:
    """Delete the temporary files of writes that were killed (a stopped actor or task)."""
    for entry in Path(directory).iterdir():
        if (
            entry.name.startswith(".")
            and entry.name.endswith(".tmp")
            and is_stream_file(entry.name)
        ):
            entry.unlink(missing_ok=True)


def mine_streamed(
    forward: SearchRequest,
    backward: SearchRequest,
    margin: Margin,
    mode: Mode,
    search: StreamingSearch,
    stream: StreamConfig,
    progress: ProgressCallback = no_progress,
) -> PairParts:
    """The pairs ``select_pairs`` would select from ``forward`` (the source rows' neighbours
    among the target rows) and ``backward`` (the reverse), written in parts in
    ``stream.directory`` (see the module doc); pair positions index ``forward.query_rows`` and
    ``backward.query_rows``, and each request's ``allowed`` rows are the other one's query rows
    (None: all rows). ``search`` finds the neighbours (``InProcessSearch``, ``RaySearch``).
    Two runs never share the work directory (``output_lock``)."""
    directory = Path(stream.directory)
    inputs = [r.database.directory for r in (forward, backward)]
    check_output_path(
        directory, directory=True, option="work_dir", inputs=inputs, owner=STREAM_OUTPUT
    )
    with output_lock(directory, job="streamed mining", option="work_dir"):
        return _mine_streamed(directory, forward, backward, margin, mode, search, stream, progress)


def _mine_streamed(
    directory: Path,
    forward: SearchRequest,
    backward: SearchRequest,
    margin: Margin,
    mode: Mode,
    search: StreamingSearch,
    stream: StreamConfig,
    progress: ProgressCallback,
) -> PairParts:
    """``mine_streamed`` in its checked and locked work ``directory``."""
    from xretrieve.index.search import block_finish

    wanted = [block_finish(r).wanted for r in (forward, backward)]
    _start(directory, _settings(forward, backward, wanted, margin, mode, stream))
    plans = [
        _plan(Direction.FORWARD, forward, stream.part_rows),
        _plan(Direction.BACKWARD, backward, stream.part_rows),
    ]
    pairs = read_pair_parts(directory, stream.pairs_per_part)
    if pairs.complete:
        return pairs
    try:
        for plan in plans:
            _search_blocks(directory, plan, search, progress)
        for plan in plans:
            means = directory / means_name(plan.direction.queries)
            if not complete_npy(means, (plan.rows,), np.dtype("<f4")):
                write_means(directory, plan.direction, len(plan.blocks), plan.rows)
        _score_parts(directory, plans, margin, mode, search, progress)
        pairs = _select(directory, plans, mode, pairs, stream.merge_edges, progress)
    finally:
        _remove_temporary(directory)
    if not stream.keep_candidates:
        remove_stream_files(
            directory, keep=(WORK_MANIFEST, PAIRS_MANIFEST, *(p.file for p in pairs.parts))
        )
    return pairs


def _search_blocks(
    directory: Path, plan: _Plan, search: StreamingSearch, progress: ProgressCallback
) -> None:
    """Search the blocks of ``plan`` that have no complete candidate file yet."""
    request = plan.request
    candidates = request.database.manifest.count
    ids = id_dtype(candidates)
    positions = None
    if request.allowed is not None:
        path = directory / positions_name(plan.direction.candidates)
        if not complete_npy(path, (candidates,), np.dtype("<i8")):
            write_positions(path, request.allowed, candidates)
        positions = str(path)
    record = candidate_dtype(request.k, ids)
    missing = [
        number
        for number, (a, b) in enumerate(plan.blocks)
        if not complete_npy(directory / block_name(plan.direction, number), (b - a,), record)
    ]
    sink = CandidateWriter(str(directory), plan.direction, ids.str, positions)
    search.stream(request, sink, missing, progress)


def _score_parts(
    directory: Path, plans: Sequence[_Plan], margin: Margin, mode: Mode,
    search: StreamingSearch, progress: ProgressCallback,
) -> None:  # fmt: skip
    """Score the parts ``mode`` selects from that are not complete yet (``PartScoring``)."""
    directions = {
        Mode.FORWARD: (Direction.FORWARD,),
        Mode.BACKWARD: (Direction.BACKWARD,),
        Mode.INTERSECT: (Direction.FORWARD, Direction.BACKWARD),
        Mode.MAX: (Direction.FORWARD, Direction.BACKWARD),
    }[mode]
    tasks = []
    for plan in (p for p in plans if p.direction in directions):
        keep_best = mode is Mode.INTERSECT and plan.direction is Direction.BACKWARD
        for number, blocks in enumerate(plan.parts):
            start, stop = plan.blocks[blocks[0]][0], plan.blocks[blocks[-1]][1]
            done = complete_npy(
                directory / part_name(plan.direction, number), (stop - start,), EDGE
            )
            if keep_best:
                best = directory / best_name(plan.direction, number)
                done = done and complete_npy(best, (stop - start,), np.dtype("<i8"))
            if not done:
                tasks.append(
                    PartScoring(
                        str(directory), plan.direction, number, blocks, start, margin, keep_best
                    )
                )
    search.run_tasks(tasks, "margin scores", progress)
    if mode is Mode.INTERSECT:
        backward = plans[1]
        if not complete_npy(directory / BEST_LOOKUP, (backward.rows,), np.dtype("<i8")):
            write_best_lookup(directory, len(backward.parts), backward.rows)


def _sorted_parts(directory: Path, plans: Sequence[_Plan], mode: Mode) -> list[SortedPart]:
    """The scored parts merged for ``mode``, with their pool positions as ``select_pairs``
    pools them: forward bests by source row, then backward bests by target row."""
    forward, backward = plans
    parts = []
    if mode is not Mode.BACKWARD:
        parts += [
            SortedPart(directory / part_name(Direction.FORWARD, n), "src", 0)
            for n in range(len(forward.parts))
        ]
    if mode in (Mode.BACKWARD, Mode.MAX):
        parts += [
            SortedPart(directory / part_name(Direction.BACKWARD, n), "tgt", forward.rows)
            for n in range(len(backward.parts))
        ]
    return parts


def _taken_by(pairs: PairParts, n_src: int, n_tgt: int) -> Taken:
    """The rows matched by the finished pair parts (``max`` continues after them)."""
    taken = Taken.empty(n_src, n_tgt)
    for part in pairs.parts:
        taken.add(np.load(pairs.directory / part.file))
    return taken


def _select(
    directory: Path, plans: Sequence[_Plan], mode: Mode, pairs: PairParts, merge_edges: int,
    progress: ProgressCallback,
) -> PairParts:  # fmt: skip
    """Merge the scored parts, select ``mode``'s pairs and write them in parts after the
    finished ones."""
    parts = _sorted_parts(directory, plans, mode)
    buffer_rows = max(256, merge_edges // max(1, len(parts)))
    forward, backward = plans
    total = {Mode.MAX: forward.rows + backward.rows, Mode.BACKWARD: backward.rows}.get(
        mode, forward.rows
    )
    after = resume_point(pairs)
    taken = _taken_by(pairs, forward.rows, backward.rows) if mode is Mode.MAX else None
    lookup = directory / BEST_LOOKUP if mode is Mode.INTERSECT else None
    writer = PairPartWriter(pairs)
    progress("pair selection", 0, total)
    chunks = _counted(merged_edges(parts, buffer_rows, after), total, progress)
    for edges, keys, pools in select_edges(chunks, mode, taken=taken, best_lookup=lookup):
        writer.add(edges, keys, pools)
    return writer.finish()


def _counted(
    chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], total: int,
    progress: ProgressCallback,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    done = 0
    for chunk in chunks:
        yield chunk
        done += chunk[0].size
        progress("pair selection", done, total)


@contextlib.contextmanager
def temporary_work_directory() -> Iterator[Path]:
    """A new directory for a run that keeps nothing (removed afterwards, also on an error or
    an interrupt): ``$TMPDIR`` or the system's temporary directory."""
    path = Path(tempfile.mkdtemp(prefix="xretrieve-mining-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
