"""Mined pairs written in parts: ``pairs-NNNNN.npy`` (``EDGE`` records: score, source and target
positions, best first) of ``pairs_per_part`` pairs each (the last one fewer), and ``pairs.json``
listing the finished parts, rewritten atomically after each one. Each part records where the
selection stream stood after its last pair, so an interrupted selection continues from the last
finished part; ``complete`` says that the stream has ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write, save_npy
from xretrieve.core.readers import read_json_object
from xretrieve.mining.candidates import EDGE, complete_npy
from xretrieve.mining.margin import MinedPairs
from xretrieve.mining.stream_select import Key

PAIRS_MANIFEST = "pairs.json"
FORMAT = "xretrieve-mined-pairs"
VERSION = 1


def pairs_name(number: int) -> str:
    return f"pairs-{number:05d}.npy"


@dataclass(frozen=True)
class PairPart:
    """One finished part: ``pairs`` pairs in ``file``; the stream continues after ``after``."""

    file: str
    pairs: int
    after: tuple[int, int]


@dataclass(frozen=True)
class PairParts:
    """The pairs of a streamed mining run, in ``directory``; ``complete`` once all are."""

    directory: Path
    pairs_per_part: int
    parts: tuple[PairPart, ...]
    complete: bool

    def __len__(self) -> int:
        return sum(part.pairs for part in self.parts)

    def chunks(self, threshold: float | None = None) -> Iterator[MinedPairs]:
        """The pairs part by part, best first (those ``>= threshold`` when given)."""
        for part in self.parts:
            edges = np.load(self.directory / part.file)
            pairs = MinedPairs(edges["src"].copy(), edges["tgt"].copy(), edges["score"].copy())
            yield pairs.above(threshold)

    def load(self, threshold: float | None = None) -> MinedPairs:
        """All pairs (``>= threshold`` when given) in one ``MinedPairs``."""
        chunks = list(self.chunks(threshold))
        if not chunks:
            empty = np.empty(0, dtype=np.int64)
            return MinedPairs(empty, empty.copy(), np.empty(0, dtype=np.float32))
        return MinedPairs(
            np.concatenate([c.src_index for c in chunks]),
            np.concatenate([c.tgt_index for c in chunks]),
            np.concatenate([c.score for c in chunks]),
        )

    def write_manifest(self) -> None:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "pairs_per_part": self.pairs_per_part,
            "complete": self.complete,
            "parts": [asdict(part) for part in self.parts],
        }
        with atomic_write(self.directory / PAIRS_MANIFEST) as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")


def read_pair_parts(directory: Path, pairs_per_part: int) -> PairParts:
    """The finished parts ``directory`` holds for ``pairs_per_part`` (none without a manifest
    or with another part size); a part that is missing or damaged ends the list there."""
    directory = Path(directory)
    fresh = PairParts(directory, pairs_per_part, (), False)
    path = directory / PAIRS_MANIFEST
    if not path.is_file():
        return fresh
    try:
        data = read_json_object(path)
        if (data.get("format"), data.get("version")) != (FORMAT, VERSION):
            return fresh
        if data["pairs_per_part"] != pairs_per_part:
            return fresh
        listed = [
            PairPart(p["file"], int(p["pairs"]), (int(p["after"][0]), int(p["after"][1])))
            for p in data["parts"]
        ]
        complete = bool(data["complete"])
    except (InputError, KeyError, TypeError, ValueError, IndexError):
        return fresh
    parts: list[PairPart] = []
    for number, part in enumerate(listed):
        if part.file != pairs_name(number) or not complete_npy(
            directory / part.file, (part.pairs,), EDGE
        ):
            complete = False
            break
        parts.append(part)
    return PairParts(directory, pairs_per_part, tuple(parts), complete)


class PairPartWriter:
    """Cuts the selected stream into parts of ``pairs_per_part`` pairs after ``parts`` (the
    finished ones), writing each and then the manifest."""

    def __init__(self, parts: PairParts) -> None:
        self.parts = parts
        self._edges: list[np.ndarray] = []
        self._after: list[np.ndarray] = []
        self._held = 0

    def add(self, edges: np.ndarray, keys: np.ndarray, pools: np.ndarray) -> None:
        self._edges.append(edges)
        self._after.append(np.stack([keys.astype(np.int64), pools.astype(np.int64)], axis=1))
        self._held += edges.size
        while self._held >= self.parts.pairs_per_part:
            self._write(self.parts.pairs_per_part)

    def finish(self) -> PairParts:
        """Write the last, shorter part and mark the pairs complete."""
        if self._held:
            self._write(self._held)
        self.parts = PairParts(
            self.parts.directory, self.parts.pairs_per_part, self.parts.parts, True
        )
        self.parts.write_manifest()
        return self.parts

    def _write(self, count: int) -> None:
        edges = np.concatenate(self._edges)
        after = np.concatenate(self._after)
        number = len(self.parts.parts)
        save_npy(self.parts.directory / pairs_name(number), edges[:count])
        last = (int(after[count - 1, 0]), int(after[count - 1, 1]))
        part = PairPart(pairs_name(number), count, last)
        self.parts = PairParts(
            self.parts.directory,
            self.parts.pairs_per_part,
            (*self.parts.parts, part),
            False,
        )
        self.parts.write_manifest()
        self._edges, self._after = [edges[count:]], [after[count:]]
        self._held -= count


def resume_point(parts: PairParts) -> Key | None:
    """Where the selection stream continues: after the last finished part (None: the start)."""
    return parts.parts[-1].after if parts.parts else None
