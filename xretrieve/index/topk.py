"""Top-k lists from several database shards merged into one global top-k (pure functions).

Margins need each query's k nearest neighbours over the *whole* database; a shard only knows its
own. Merging per-shard lists keeps the global top k exactly when every shard returned its own
top k (a global neighbour of rank <= k is within the top k of its shard). Equal similarities are
ordered by global id, so the result does not depend on the order shards are visited or answer in.
FAISS marks missing neighbours (fewer hits than k) with id -1; they sort last.
"""

from __future__ import annotations

import numpy as np


def sort_topk(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row of ``sims``/``ids`` (n, c): similarity descending, then id
    ascending; entries with id -1 last. Returns (n, min(k, c)) float32 and int64."""
    sims = np.asarray(sims, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    missing = ids < 0
    # Keys for lexsort, last one primary: missing entries last, then -sim, then id.
    order = np.lexsort((ids, np.where(missing, 0, -sims), missing), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(sims, ids)`` pairs, each (n, k_i) with *global* ids, into the global
    top ``k`` per row (see ``sort_topk`` for the order)."""
    if not parts:
        raise ValueError("nothing to merge")
    sims = np.concatenate([s for s, _ in parts], axis=1)
    ids = np.concatenate([i for _, i in parts], axis=1)
    return sort_topk(sims, ids, k)
