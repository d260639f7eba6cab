"""An on-disk, append-only store of sentence embeddings keyed by the sha1 of the text.

One store holds the vectors of one model (export settings included) at one layer, so a key is
just the text. Layout of a store directory::

    shard-<uuid>.npy     float32 (rows, dim) vectors
    shard-<uuid>.keys    rows * 20 bytes: the sha1 digest of each row's UTF-8 text
    shard-<uuid>.sha256  size, mtime and sha256 of the two (``xretrieve.core.integrity``)

A shard is written ``.npy``, ``.keys``, then ``.sha256``, each atomically; a shard without its
``.sha256`` file (a run killed in between, or an older xretrieve) is ignored and its vectors are
recomputed. A shard whose files no longer match their digests (damaged on disk, edited) is
deleted with a warning, and its vectors recomputed. Two
processes may add to the same store: shards have unique names and a text found in two shards
has the same vector in both.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.files import atomic_write, save_npy
from xretrieve.core.integrity import remove_files, verify_record, write_record
from xretrieve.core.readers import open_npy

logger = logging.getLogger(__name__)

DIGEST_BYTES = 20


def text_key(text: str) -> bytes:
    """The 20-byte sha1 digest of ``text`` (UTF-8) that keys its vector."""
    return hashlib.sha1(text.encode("utf-8")).digest()


class EmbeddingStore:
    """Vectors of one (model, layer) by text digest; ``add`` appends a shard, ``get`` gathers.

    Thread-safe: one lock guards the index, shards are immutable once visible."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._shards: list[np.ndarray] = []
        self._index: dict[bytes, tuple[int, int]] = {}
        self.dim: int | None = None
        self._load()

    def _load(self) -> None:
        if not self.directory.is_dir():
            return
        for record in sorted(self.directory.glob("shard-*.sha256")):
            vectors_path, keys_path = record.with_suffix(".npy"), record.with_suffix(".keys")
            problem = verify_record(record)
            if problem is not None:
                logger.warning(
                    "embedding cache shard %s is damaged (%s): deleted, its vectors will be "
                    "recomputed",
                    vectors_path,
                    problem,
                )
                remove_files((record, vectors_path, keys_path))
                continue
            try:
                vectors = open_npy(vectors_path, kind="embedding cache")
                keys = keys_path.read_bytes()
            except (InputError, OSError) as error:
                logger.warning("ignoring unreadable embedding shard %s: %s", vectors_path, error)
                continue
            if vectors.ndim != 2 or len(keys) != DIGEST_BYTES * vectors.shape[0]:
                logger.warning("ignoring inconsistent embedding shard %s", vectors_path)
                continue
            if self.dim is not None and vectors.shape[1] != self.dim:
                raise XRetrieveError(
                    f"embedding cache {self.directory} mixes dimensions {self.dim} and "
                    f"{vectors.shape[1]}; delete the directory to rebuild it"
                )
            self.dim = int(vectors.shape[1])
            self._register(vectors, keys)

    def _register(self, vectors: np.ndarray, keys: bytes) -> None:
        shard = len(self._shards)
        self._shards.append(vectors)
        for row in range(vectors.shape[0]):
            self._index.setdefault(
                keys[row * DIGEST_BYTES : (row + 1) * DIGEST_BYTES], (shard, row)
            )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def missing(self, keys: Sequence[bytes]) -> list[bytes]:
        """The distinct ``keys`` not in the store, in first-occurrence order."""
        with self._lock:
            return list(dict.fromkeys(key for key in keys if key not in self._index))

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Append ``vectors`` ``(len(keys), dim)`` as one new shard (skipped when empty)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise XRetrieveError(f"expected ({len(keys)}, dim) vectors, got {vectors.shape}")
        if not keys:
            return
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise XRetrieveError(
                f"embedding cache {self.directory} holds dimension {self.dim}, got {vectors.shape[1]}"
            )
        name = f"shard-{uuid.uuid4().hex}"
        save_npy(self.directory / f"{name}.npy", vectors)
        with atomic_write(self.directory / f"{name}.keys", "wb") as handle:
            handle.write(b"".join(keys))
        write_record(
            self.directory / f"{name}.sha256",
            (self.directory / f"{name}.npy", self.directory / f"{name}.keys"),
        )
        with self._lock:
            self.dim = int(vectors.shape[1])
            self._register(vectors, b"".join(keys))

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        """``(len(keys), dim)`` float32 rows in the order of ``keys``; ``KeyError`` if one is absent."""
        with self._lock:
            locations = [self._index[key] for key in keys]
            shards = list(self._shards)
        out = np.empty((len(keys), self.dim or 0), dtype=np.float32)
        if not locations:
            return out
        shard_ids = np.fromiter((s for s, _ in locations), dtype=np.int64, count=len(locations))
        rows = np.fromiter((r for _, r in locations), dtype=np.int64, count=len(locations))
        for shard in np.unique(shard_ids):
            where = np.flatnonzero(shard_ids == shard)
            out[where] = shards[shard][rows[where]]
        return out
