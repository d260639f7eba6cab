"""``DIR/manifest.json`` of an index directory: what was built, from which files, with what.

An index directory holds ``manifest.json`` and one FAISS file per database shard
(``shard-00000.faiss``, ...). Shard ``i`` holds the global rows ``[offset, offset + rows)`` of the
concatenated source files under local ids ``0 .. rows - 1``. Reading a manifest checks it against
its files: every shard present with the recorded size (and, with ``verify_shards``, SHA-256), the
source files present with the recorded shapes, and the FAISS version compatible.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from xretrieve.errors import InputError
from xretrieve.files import atomic_write
from xretrieve.index.sources import open_npy
from xretrieve.integrity import file_sha256

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
    training)."""

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

    def to_json(self) -> dict:
        return asdict(self)


def write_manifest(directory: Path, manifest: IndexManifest) -> None:
    with atomic_write(Path(directory) / MANIFEST) as handle:
        json.dump(manifest.to_json(), handle, indent=2)
        handle.write("\n")


def compatible_versions(built: str, running: str) -> bool:
    """FAISS's file format follows its major.minor releases; equal major.minor is compatible."""
    return built.split(".")[:2] == running.split(".")[:2]


def _parse(path: Path) -> IndexManifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            path, "no index manifest here (build one with 'xretrieve index build')"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"unreadable index manifest ({error})") from None
    try:
        if data["format_version"] != FORMAT_VERSION:
            raise InputError(
                path, f"manifest format {data['format_version']}, expected {FORMAT_VERSION}"
            )
        fields = {key: data[key] for key in IndexManifest.__dataclass_fields__}
        fields["sources"] = tuple(SourceRecord(**s) for s in data["sources"])
        fields["shards"] = tuple(ShardRecord(**s) for s in data["shards"])
        return IndexManifest(**fields)
    except (KeyError, TypeError) as error:
        raise InputError(path, f"index manifest lacks or misnames a field ({error})") from None


def read_manifest(
    directory: Path, *, verify_shards: bool = True, verify_sources: bool = False
) -> IndexManifest:
    """The manifest of ``directory``, checked against its files and this FAISS; ``InputError``
    naming the file on any mismatch. Shards are hashed unless ``verify_shards`` is off; source
    embeddings (often far larger) only with ``verify_sources``, else checked by shape and size."""
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
    for source in manifest.sources:
        _check_source(source, manifest.dimension, verify_sources)
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


def _check_source(source: SourceRecord, dimension: int, verify: bool) -> None:
    path = Path(source.path)
    matrix = open_npy(path)
    if matrix.shape != (source.rows, dimension) or str(matrix.dtype) != source.dtype:
        raise InputError(
            path,
            f"is {matrix.shape} {matrix.dtype}, the index manifest recorded "
            f"({source.rows}, {dimension}) {source.dtype}",
        )
    if path.stat().st_size != source.bytes:
        raise InputError(path, "size differs from the index manifest's record")
    if verify and file_sha256(path) != source.sha256:
        raise InputError(path, "SHA-256 differs from the index manifest's record")
