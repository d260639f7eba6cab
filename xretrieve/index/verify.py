"""``index verify``: an index directory checked in full, its manifest against every file.

Beyond what opening an index checks (``read_index_manifest``: shard sizes and hashes, source shapes
and sizes), every source is hashed again and every shard file is read (memory-mapped, its
vectors stay on disk) and compared with the manifest: the FAISS index type its ``factory``
builds (transforms, inverted lists, code size, PQ shape), dimension, metric and row count. A
hand-edited manifest that names another factory (``IVF99,PQ8`` for a ``Flat`` index) fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.index.factory import (
    describe,
    factory_structure,
    faiss_module,
    inverted_lists,
    structure,
)
from xretrieve.index.manifest import MANIFEST, IndexManifest, ShardRecord, read_index_manifest
from xretrieve.index.search import read_shard


@dataclass(frozen=True)
class IndexCheck:
    """What ``verify_index`` checked: the ``manifest``, its shards (``shard_bytes`` hashed, each
    file's FAISS type, dimension, metric and rows compared) and its sources (``source_bytes``
    hashed, shapes compared)."""

    manifest: IndexManifest
    shard_bytes: int
    source_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "shards": len(self.manifest.shards),
            "rows": self.manifest.count,
            "shard_bytes": self.shard_bytes,
            "sources": len(self.manifest.sources),
            "source_bytes": self.source_bytes,
            "checked": [
                "shard sizes and SHA-256",
                "shard FAISS type, dimension, metric and rows against the manifest",
                "source shapes, sizes and SHA-256",
            ],
        }


def verify_index(directory: Path) -> IndexCheck:
    """Check ``directory`` in full (see the module doc); ``InputError`` naming the file that
    differs from its manifest."""
    directory = Path(directory)
    manifest = read_index_manifest(directory, verify_shards=True, verify_sources=True)
    try:
        expected = factory_structure(manifest.factory, manifest.dimension)
    except XRetrieveError as error:
        raise InputError(
            directory / MANIFEST, f"records a factory FAISS cannot build ({error})"
        ) from None
    for shard in manifest.shards:
        _check_shard_file(directory, manifest, shard, expected)
    return IndexCheck(
        manifest,
        shard_bytes=sum(s.bytes for s in manifest.shards),
        source_bytes=sum(s.bytes for s in manifest.sources),
    )


def _read_mapped(path: Path):
    """The FAISS index in ``path`` with its vectors memory-mapped where FAISS can."""
    faiss = faiss_module()
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        return read_shard(path)  # types FAISS cannot map; InputError when unreadable


def _check_shard_file(
    directory: Path, manifest: IndexManifest, shard: ShardRecord, expected: tuple[Any, ...]
) -> None:
    faiss = faiss_module()
    path = directory / shard.file
    index = _read_mapped(path)
    if int(index.metric_type) != faiss.METRIC_INNER_PRODUCT:
        raise InputError(path, f"is {describe(index)}; {MANIFEST} says inner product")
    if int(index.d) != manifest.dimension:
        raise InputError(path, f"is {describe(index)}; {MANIFEST} says {manifest.dimension}")
    if int(index.ntotal) != shard.rows:
        raise InputError(path, f"holds {index.ntotal} vectors, {MANIFEST} says {shard.rows}")
    lists = inverted_lists(index)
    if manifest.lists is not None and lists != manifest.lists:
        raise InputError(path, f"has {lists} inverted lists, {MANIFEST} says {manifest.lists}")
    found = structure(index)
    if found != expected:
        raise InputError(
            path,
            f"holds a FAISS index of type {_brief(found)}, but {MANIFEST}'s factory "
            f"{manifest.factory!r} builds {_brief(expected)}",
        )


def _brief(found: tuple[Any, ...]) -> str:
    """The FAISS classes and shape of a ``structure``, e.g. ``IndexIVFPQ (8 lists, PQ4x4)``."""
    names: list[str] = []
    details: list[str] = []

    def walk(part: tuple[Any, ...]) -> None:
        names.append(part[0])
        for item in part[3:]:
            if item[0] == "transform":
                names.append(item[1])
            elif item[0] in ("index", "base_index", "refine_index"):
                walk(item[1])
            elif item[0] == "lists":
                details.append(f"{item[1]} lists")
            elif item[0] == "pq":
                details.append(f"PQ{item[1]}x{item[2]}")

    walk(found)
    return " + ".join(names) + (f" ({', '.join(details)})" if details else "")
