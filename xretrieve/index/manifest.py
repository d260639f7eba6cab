"""``DIR/manifest.json`` of an index directory: what was built, from which files, with what.

An index directory holds ``manifest.json`` and one FAISS file per database shard
(``shard-00000.faiss``, ...). Shard ``i`` holds the global rows ``[offset, offset + rows)`` of the
concatenated source files under local ids ``0 .. rows - 1``. Reading a manifest checks its
values' types and it against its files: every shard present with the recorded size (and, with
``verify_shards``, SHA-256), the source files present with the recorded shapes and content
(size and modification time, hashed again when the time changed, as the cache does;
``verify_sources`` hashes them always), and the FAISS version compatible.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.integrity import content_unchanged, file_sha256
from xretrieve.core.outputs import OutputOwner
from xretrieve.core.readers import open_npy, read_json_object
from xretrieve.core.records import record_fields

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SourceRecord:
    """An embedding file the index was built from."""

    path: str
    rows: int
    dtype: str
    bytes: int
    sha256: str
    # Modification time when hashed (None in manifests written before it was recorded): an
    # unchanged size and time is taken as unchanged content without hashing the file again.
    mtime_ns: int | None = None


@dataclass(frozen=True)
class ShardRecord:
    """One FAISS file of the index: global rows ``[offset, offset + rows)``."""

    file: str
    offset: int
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class IndexManifest:
    """``factory``: the FAISS ``index_factory`` string used (``factory_note`` says why it differs
    from the size-based default, if it does); ``metric``: always inner product over L2-normalised
    rows (cosine); ``train_size``/``seed``: the training sample (0 when the index needs no
    training); ``lists``: the inverted lists of each shard (0: none; None in manifests written
    before it was recorded)."""

    format_version: int
    factory: str
    factory_note: str
    dimension: int
    count: int
    metric: str
    normalized: bool
    train_size: int
    seed: int
    faiss_version: str
    sources: tuple[SourceRecord, ...]
    shards: tuple[ShardRecord, ...]
    lists: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def write_index_manifest(directory: Path, manifest: IndexManifest) -> None:
    with atomic_write(Path(directory) / MANIFEST) as handle:
        json.dump(manifest.to_json(), handle, indent=2)
        handle.write("\n")


def compatible_versions(built: str, running: str) -> bool:
    """FAISS's file format follows its major.minor releases; equal major.minor is compatible."""
    return built.split(".")[:2] == running.split(".")[:2]


# What an index build writes into its directory: the manifest and the shards, and the
# temporary file of a manifest write that was killed (``.manifest.json.*.tmp``).
_SHARD_FILE = re.compile(r"shard-\d{5,}\.faiss")


def is_index_file(name: str) -> bool:
    """Whether an index directory may hold a file of this name."""
    return (
        name == MANIFEST
        or _SHARD_FILE.fullmatch(name) is not None
        or (name.startswith(f".{MANIFEST}.") and name.endswith(".tmp"))
    )


def _parse(path: Path) -> IndexManifest:
    if not path.exists():
        raise InputError(path, "no index manifest here (build one with 'xretrieve index build')")
    try:
        data = read_json_object(path)
    except InputError as error:
        raise InputError(path, f"unreadable index manifest ({error.detail})", error.line) from None
    version = data.get("format_version")
    if type(version) is int and version != FORMAT_VERSION:  # other types: record_fields says
        raise InputError(path, f"manifest format {version}, expected {FORMAT_VERSION}")
    fields = record_fields(IndexManifest, data, path, "index manifest")
    for key in ("sources", "shards"):
        if not isinstance(fields[key], list) or not fields[key]:
            raise InputError(path, f"index manifest: {key!r} is not a non-empty list")
    fields["sources"] = tuple(
        SourceRecord(**record_fields(SourceRecord, s, path, f"source {i}"))
        for i, s in enumerate(fields["sources"])
    )
    fields["shards"] = tuple(
        ShardRecord(**record_fields(ShardRecord, s, path, f"shard {i}"))
        for i, s in enumerate(fields["shards"])
    )
    manifest = IndexManifest(**fields)
    _check_values(path, manifest)
    return manifest


def _check_values(path: Path, manifest: IndexManifest) -> None:
    """Values a build cannot have written: negative sizes, a shard file outside the directory."""
    counts = [("dimension", manifest.dimension), ("count", manifest.count)]
    counts += [(f"source {i} rows", s.rows) for i, s in enumerate(manifest.sources)]
    counts += [(f"shard {i} rows", s.rows) for i, s in enumerate(manifest.shards)]
    for name, value in counts:
        if value < 1:
            raise InputError(path, f"index manifest: {name} is {value}, expected at least 1")
    for shard in manifest.shards:
        if _SHARD_FILE.fullmatch(shard.file) is None:
            raise InputError(
                path,
                f"index manifest: shard file {shard.file!r} is not a shard name "
                "(shard-NNNNN.faiss) inside the index directory",
            )


def index_disowns(directory: Path) -> str | None:
    """None when the non-empty ``directory`` is an index directory (an index manifest, and only
    what an index build writes), else why not. The ``OutputOwner`` of ``index build --out``."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        return f"no index {MANIFEST}"
    try:
        _parse(directory / MANIFEST)
    except InputError:
        return f"its {MANIFEST} is not an index manifest"
    foreign = sorted(
        entry.name
        for entry in directory.iterdir()
        if not (entry.is_file() and not entry.is_symlink() and is_index_file(entry.name))
    )
    if foreign:
        return (
            f"it also holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            "which index build does not write"
        )
    return None


INDEX_OUTPUT = OutputOwner("index build", index_disowns)


def read_index_manifest(
    directory: Path, *, verify_shards: bool = True, verify_sources: bool = False
) -> IndexManifest:
    """The manifest of ``directory``, checked against its files and this FAISS; ``InputError``
    naming the file on any mismatch. Shards are hashed unless ``verify_shards`` is off. Source
    embeddings (often far larger) are checked by shape and size, and by SHA-256 when their
    modification time is not the recorded one (then the manifest's record of the time is
    refreshed, as the cache does) or with ``verify_sources``."""
    import faiss

    directory = Path(directory)
    path = directory / MANIFEST
    manifest = _parse(path)
    if not compatible_versions(manifest.faiss_version, faiss.__version__):
        raise InputError(
            path,
            f"index written by FAISS {manifest.faiss_version}, this is FAISS "
            f"{faiss.__version__}; rebuild it with 'xretrieve index build'",
        )
    expected = 0
    for shard in manifest.shards:
        if shard.offset != expected:
            raise InputError(
                path, f"shard {shard.file} starts at row {shard.offset}, not {expected}"
            )
        expected += shard.rows
        _check_shard(directory / shard.file, shard, verify_shards)
    if expected != manifest.count:
        raise InputError(path, f"shards hold {expected} rows, the manifest says {manifest.count}")
    if sum(s.rows for s in manifest.sources) != manifest.count:
        raise InputError(path, "source files' rows do not add up to the manifest's count")
    sources = tuple(
        _check_source(source, manifest.dimension, verify_sources) for source in manifest.sources
    )
    if sources != manifest.sources:
        manifest = replace(manifest, sources=sources)
        with contextlib.suppress(OSError):  # a read-only index: hashed again next time
            write_index_manifest(directory, manifest)
    return manifest


def _check_shard(path: Path, shard: ShardRecord, verify: bool) -> None:
    if not path.is_file():
        raise InputError(path, "index shard missing (listed in manifest.json)")
    size = path.stat().st_size
    if size != shard.bytes:
        raise InputError(
            path, f"index shard has {size} bytes, manifest.json says {shard.bytes} (truncated?)"
        )
    if verify and file_sha256(path) != shard.sha256:
        raise InputError(path, "index shard's SHA-256 differs from manifest.json's")


def _check_source(source: SourceRecord, dimension: int, verify: bool) -> SourceRecord:
    """``source`` when its file still holds what the index was built from (its record with the
    file's current modification time when that changed but the content did not)."""
    path = Path(source.path)
    matrix = open_npy(path)
    if matrix.shape != (source.rows, dimension) or str(matrix.dtype) != source.dtype:
        raise InputError(
            path,
            f"is {matrix.shape} {matrix.dtype}, the index manifest recorded "
            f"({source.rows}, {dimension}) {source.dtype}",
        )
    stat = path.stat()
    if stat.st_size != source.bytes:
        raise InputError(path, "size differs from the index manifest's record")
    recorded_mtime = None if verify else source.mtime_ns
    if not content_unchanged(path, stat, recorded_mtime, source.sha256):
        raise InputError(
            path,
            "SHA-256 differs from the index manifest's record: the file changed since the "
            "index was built from it (re-embedded?); rebuild the index with "
            "'xretrieve index build'",
        )
    return replace(source, mtime_ns=stat.st_mtime_ns)
