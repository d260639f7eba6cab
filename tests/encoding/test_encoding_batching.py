"""Token-budget batching and order restoration, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from xretrieve.encoding.batching import padding_stats, plan_batches, restore_order


@pytest.mark.parametrize("seed", range(5))
def test_batches_respect_the_budget_and_cover_every_sentence_once(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 130, size=int(rng.integers(1, 400)))
    budget = int(rng.integers(128, 2000))
    plan = plan_batches(lengths, budget)
    seen = np.concatenate([plan.batch(b) for b in range(len(plan))])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in range(len(plan)):
        batch_lengths = lengths[plan.batch(b)]
        assert batch_lengths[0] == batch_lengths.max()  # padded to its first (longest) row
        assert len(batch_lengths) * batch_lengths.max() <= budget
    # Longest first over the whole window, so batches are as full as the budget allows.
    assert np.all(np.diff(lengths[plan.order]) <= 0)
    for b in range(len(plan) - 1):
        nxt = plan.batch(b + 1)
        assert (len(plan.batch(b)) + 1) * lengths[plan.batch(b)[0]] > budget or len(nxt) == 0


def test_over_budget_sentence_gets_its_own_batch() -> None:
    plan = plan_batches(np.array([5, 300, 5, 6]), batch_tokens=64)
    assert [plan.batch(b).tolist() for b in range(len(plan))] == [[1], [3, 0, 2]]


def test_equal_lengths_keep_input_order_and_empty_input_has_no_batches() -> None:
    plan = plan_batches(np.array([4, 4, 4, 4]), batch_tokens=8)
    assert [plan.batch(b).tolist() for b in range(len(plan))] == [[0, 1], [2, 3]]
    assert len(plan_batches(np.array([], dtype=np.int64), 8)) == 0
    with pytest.raises(ValueError):
        plan_batches(np.array([3]), 0)


def test_restore_order_inverts_the_sort() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(50, 3)).astype(np.float32)
    order = rng.permutation(50)
    assert np.array_equal(restore_order(values[order], order), values)


def test_padding_stats_by_hand() -> None:
    lengths = np.array([3, 10, 4, 9])
    plan = plan_batches(lengths, batch_tokens=20)  # batches [1, 3] (2 x 10), [2, 0] (2 x 4)
    assert [plan.batch(b).tolist() for b in range(len(plan))] == [[1, 3], [2, 0]]
    assert padding_stats(lengths, plan) == (26, 28, 2 * 100 + 2 * 16)
