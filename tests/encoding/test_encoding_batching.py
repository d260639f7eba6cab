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


# ---------------------------------------------------------------- length buckets (the CPU)


def test_length_buckets_by_hand() -> None:
    from xretrieve.encoding.batching import LengthBuckets

    lengths = np.array([10, 9, 8, 5, 5, 4, 20, 1])
    cut = {
        0.0: [[6], [0], [1], [2], [3, 4], [5], [7]],
        0.1: [[6], [0, 1], [2], [3, 4], [5], [7]],  # 9 is 10 % short of 10, 8 is 20 %
        0.5: [[6, 0], [1, 2, 3, 4], [5], [7]],  # the budget (100) ends the second batch
    }
    for max_padding, batches in cut.items():
        plan = plan_batches(lengths, 100, LengthBuckets(max_tokens=1000, max_padding=max_padding))
        assert [plan.batch(b).tolist() for b in range(len(plan))] == batches
    # max_tokens lowers a larger budget and leaves a smaller one alone.
    plan = plan_batches(lengths, 100, LengthBuckets(max_tokens=10, max_padding=0.9))
    assert [plan.batch(b).tolist() for b in range(len(plan))] == [
        [6],
        [0],
        [1],
        [2],
        [3, 4],
        [5, 7],
    ]
    plan = plan_batches(lengths, 8, LengthBuckets(max_tokens=1000, max_padding=0.9))
    assert [plan.batch(b).tolist() for b in range(len(plan))] == [
        [6],
        [0],
        [1],
        [2],
        [3],
        [4],
        [5, 7],
    ]


@pytest.mark.parametrize("seed", range(5))
def test_length_buckets_bound_padding_and_size(seed: int) -> None:
    from xretrieve.encoding.batching import LengthBuckets

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 130, size=int(rng.integers(1, 400)))
    buckets = LengthBuckets(max_tokens=int(rng.integers(64, 600)), max_padding=rng.uniform(0, 0.5))
    plan = plan_batches(lengths, 4096, buckets)
    seen = np.concatenate([plan.batch(b) for b in range(len(plan))])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in range(len(plan)):
        batch_lengths = lengths[plan.batch(b)]
        longest = batch_lengths[0]
        assert len(batch_lengths) == 1 or len(batch_lengths) * longest <= buckets.max_tokens
        assert np.all(longest - batch_lengths <= buckets.max_padding * longest)
        if b + 1 < len(plan):  # a batch ends only at the budget or at the padding bound
            following = lengths[plan.batch(b + 1)[0]]
            full = (len(batch_lengths) + 1) * longest > buckets.max_tokens
            assert full or longest - following > buckets.max_padding * longest
    unbucketed = padding_stats(lengths, plan_batches(lengths, buckets.max_tokens))[1]
    assert padding_stats(lengths, plan)[1] <= unbucketed


def test_length_buckets_check_their_values() -> None:
    from xretrieve.core.errors import XRetrieveError
    from xretrieve.encoding.batching import LengthBuckets

    for bad in (
        {"max_tokens": 0},
        {"max_tokens": 2.5},
        {"max_padding": 1.0},
        {"max_padding": -0.1},
    ):
        with pytest.raises(XRetrieveError):
            LengthBuckets(**bad)
