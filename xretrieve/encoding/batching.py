"""Token-budget batching: sort sentences by token length, cut batches whose padded size fits a
budget, and put the results back in input order. Pure functions over numpy arrays.

As in sentence-transformers' ``encode`` (sort longest first, restore with one ``argsort``) and
LASER's ``_make_batches`` (batches cut by a token budget, not a sentence count)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xretrieve.core.errors import XRetrieveError


@dataclass(frozen=True)
class LengthBuckets:
    """Batches for a device where every padded token costs its full compute and small batches
    run as fast per token as large ones (a CPU): at most ``max_tokens`` padded tokens (or the
    token budget, if smaller), and no sentence padded by more than ``max_padding`` of its batch's
    length (``plan_batches``). The defaults were measured with ONNX Runtime on a 2-core CPU
    (benchmarks/RESULTS.md, "CPU default path")."""

    max_tokens: int = 1024
    max_padding: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise XRetrieveError(f"max_tokens must be an integer, not {self.max_tokens!r}")
        if self.max_tokens < 1:
            raise XRetrieveError(f"max_tokens must be positive, not {self.max_tokens}")
        if not 0 <= self.max_padding < 1:
            raise XRetrieveError(f"max_padding must be in [0, 1), not {self.max_padding}")


@dataclass(frozen=True)
class BatchPlan:
    """Batches over one window of sentences.

    ``order``: int64 ``(n,)``, the sentence indices sorted longest first (stable, so equal
    lengths keep input order). ``bounds``: int64 ``(n_batches + 1,)``; batch ``b`` holds the
    sentences ``order[bounds[b]:bounds[b + 1]]`` and is padded to the length of its first one."""

    order: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def batch(self, b: int) -> np.ndarray:
        """Input indices of batch ``b``, longest first."""
        return self.order[self.bounds[b] : self.bounds[b + 1]]


def plan_batches(
    lengths: np.ndarray, batch_tokens: int, buckets: LengthBuckets | None = None
) -> BatchPlan:
    """Group sentences with token ``lengths`` (int ``(n,)``, special tokens included) into
    batches of ``batch_size * max_length_in_batch <= batch_tokens`` padded tokens, longest
    first. A sentence longer than the budget on its own gets a batch of its own.

    With ``buckets``, the budget is at most ``buckets.max_tokens``, and a batch also ends before
    the first sentence that would be padded by more than ``buckets.max_padding`` of the batch's
    length (0: only equal lengths share a batch)."""
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    if buckets is not None:
        batch_tokens = min(batch_tokens, buckets.max_tokens)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = np.maximum(lengths[order], 1)
    bounds = [0]
    start = 0
    n = len(order)
    while start < n:
        # Sorted longest first, so the first sentence fixes the padded length of the batch.
        first = int(sorted_lengths[start])
        end = min(n, start + max(1, batch_tokens // first))
        if buckets is not None:
            # The bucket ends before the first length under the shortest one allowed (searched
            # in the negated lengths, which ascend along the sorted order).
            shortest = int(np.ceil(first * (1 - buckets.max_padding)))
            kept = np.searchsorted(-sorted_lengths[start:end], -shortest, side="right")
            end = start + max(1, int(kept))
        start = end
        bounds.append(start)
    return BatchPlan(order=order, bounds=np.asarray(bounds, dtype=np.int64))


def restore_order(sorted_rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows computed in ``order`` (row ``i`` belongs to input ``order[i]``) back in input order:
    ``result[order[i]] == sorted_rows[i]``, by one ``argsort``."""
    return sorted_rows[np.argsort(order, kind="stable")]


def padding_stats(lengths: np.ndarray, plan: BatchPlan) -> tuple[int, int, int]:
    """``(real_tokens, padded_tokens, attention_cells)`` of running ``plan``: the sum of
    ``lengths``, the sum over batches of ``batch_size * padded_length``, and the sum over
    batches of ``batch_size * padded_length ** 2`` (the size of the attention score matrices,
    per head and layer)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    sizes = np.diff(plan.bounds)
    if len(sizes) == 0:
        return 0, 0, 0
    padded_lengths = np.maximum(lengths[plan.order[plan.bounds[:-1]]], 1)
    return (
        int(lengths.sum()),
        int((sizes * padded_lengths).sum()),
        int((sizes * padded_lengths**2).sum()),
    )
