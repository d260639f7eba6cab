"""Token-budget batching: sort sentences by token length, cut batches whose padded size fits a
budget, and put the results back in input order. Pure functions over numpy arrays.

As in sentence-transformers' ``encode`` (sort longest first, restore with one ``argsort``) and
LASER's ``_make_batches`` (batches cut by a token budget, not a sentence count)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def plan_batches(lengths: np.ndarray, batch_tokens: int) -> BatchPlan:
    """Group sentences with token ``lengths`` (int ``(n,)``, special tokens included) into
    batches of ``batch_size * max_length_in_batch <= batch_tokens`` padded tokens, longest
    first. A sentence longer than the budget on its own gets a batch of its own."""
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = np.maximum(lengths[order], 1)
    bounds = [0]
    start = 0
    n = len(order)
    while start < n:
        # Sorted longest first, so the first sentence fixes the padded length of the batch.
        size = max(1, int(batch_tokens // sorted_lengths[start]))
        start = min(n, start + size)
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
