"""Margin scoring and pair selection: hand-checked cases, LASER reference parity, planted pairs."""

from __future__ import annotations

import numpy as np
import pytest
from mining_fixtures import unit_rows

from xretrieve.mining.margin import (
    Margin,
    MiningConfig,
    Mode,
    apply_margin,
    greedy_one_to_one,
    mine_rows,
    select_pairs,
)

# Two sources, three targets, k = 2 (see the docstring of test_hand_checked_ratio).
FWD_SIMS = np.array([[0.9, 0.5], [0.8, 0.7]], np.float32)
FWD_IDS = np.array([[0, 1], [0, 2]])
BWD_SIMS = np.array([[0.9, 0.8], [0.5, 0.1], [0.7, 0.2]], np.float32)
BWD_IDS = np.array([[0, 1], [0, 1], [1, 0]])


def as_tuples(pairs) -> list[tuple[int, int, float]]:
    return [
        (int(s), int(t), round(float(v), 5))
        for s, t, v in zip(pairs.src_index, pairs.tgt_index, pairs.score, strict=True)
    ]


def test_hand_checked_ratio() -> None:
    """fwd means: src0 0.7, src1 0.75; bwd means: tgt0 0.85, tgt1 0.3, tgt2 0.45.
    src0-tgt0: 0.9 / ((0.7 + 0.85) / 2) = 1.16129; src1-tgt2: 0.7 / ((0.75 + 0.45) / 2) = 1.16667;
    src0-tgt1: 0.5 / 0.5 = 1.0 (tgt1's backward best); src1-tgt0: 0.8 / 0.8 = 1.0."""
    pairs = select_pairs(FWD_SIMS, FWD_IDS, BWD_SIMS, BWD_IDS, Margin.RATIO, Mode.FORWARD)
    assert as_tuples(pairs) == [(1, 2, 1.16667), (0, 0, 1.16129)]
    pairs = select_pairs(FWD_SIMS, FWD_IDS, BWD_SIMS, BWD_IDS, Margin.RATIO, Mode.BACKWARD)
    assert as_tuples(pairs) == [(1, 2, 1.16667), (0, 0, 1.16129), (0, 1, 1.0)]
    pairs = select_pairs(FWD_SIMS, FWD_IDS, BWD_SIMS, BWD_IDS, Margin.RATIO, Mode.INTERSECT)
    assert as_tuples(pairs) == [(1, 2, 1.16667), (0, 0, 1.16129)]
    pairs = select_pairs(FWD_SIMS, FWD_IDS, BWD_SIMS, BWD_IDS, Margin.RATIO, Mode.MAX)
    assert as_tuples(pairs) == [(1, 2, 1.16667), (0, 0, 1.16129)]  # (0, 1): src0 taken
    assert pairs.src_index.dtype == np.int64 and pairs.score.dtype == np.float32


def test_hand_checked_distance_and_absolute() -> None:
    pairs = select_pairs(FWD_SIMS, FWD_IDS, BWD_SIMS, BWD_IDS, Margin.DISTANCE, Mode.FORWARD)
    # src0: 0.9 - 0.775 = 0.125 vs 0.5 - 0.5 = 0; src1: 0.8 - 0.8 = 0 vs 0.7 - 0.6 = 0.1.
    assert as_tuples(pairs) == [(0, 0, 0.125), (1, 2, 0.1)]
    pairs = select_pairs(FWD_SIMS, FWD_IDS, BWD_SIMS, BWD_IDS, Margin.ABSOLUTE, Mode.FORWARD)
    assert as_tuples(pairs) == [(0, 0, 0.9), (1, 0, 0.8)]


def test_modes_differ_where_they_should() -> None:
    """Absolute margin: both sources prefer tgt0, which prefers src0; tgt1 prefers src1."""
    fwd_sims, fwd_ids = np.array([[0.9, 0.1], [0.8, 0.6]], np.float32), np.array([[0, 1], [0, 1]])
    bwd_sims, bwd_ids = np.array([[0.9, 0.8], [0.6, 0.1]], np.float32), np.array([[0, 1], [1, 0]])

    def run(mode: Mode):
        return as_tuples(select_pairs(fwd_sims, fwd_ids, bwd_sims, bwd_ids, Margin.ABSOLUTE, mode))

    assert run(Mode.FORWARD) == [(0, 0, 0.9), (1, 0, 0.8)]
    assert run(Mode.BACKWARD) == [(0, 0, 0.9), (1, 1, 0.6)]
    assert run(Mode.INTERSECT) == [(0, 0, 0.9)]
    assert run(Mode.MAX) == [(0, 0, 0.9), (1, 1, 0.6)]


def test_forward_ties_pick_the_nearer_neighbour() -> None:
    sims, ids = np.array([[0.5, 0.5]], np.float32), np.array([[1, 0]])
    bwd_sims, bwd_ids = np.array([[0.5], [0.5]], np.float32), np.array([[0], [0]])
    pairs = select_pairs(sims, ids, bwd_sims, bwd_ids, Margin.ABSOLUTE, Mode.FORWARD)
    assert pairs.tgt_index.tolist() == [1]


def test_apply_margin() -> None:
    a, b = np.array([1.0, 0.5]), np.array([0.5, 0.25])
    np.testing.assert_allclose(apply_margin(a, b, Margin.RATIO), [2.0, 2.0])
    np.testing.assert_allclose(apply_margin(a, b, Margin.DISTANCE), [0.5, 0.25])
    np.testing.assert_allclose(apply_margin(a, b, Margin.ABSOLUTE), [1.0, 0.5])


def sequential_greedy(src, tgt, score) -> list[int]:
    taken_src, taken_tgt, kept = set(), set(), []
    for position in np.argsort(-score, kind="stable"):
        if src[position] not in taken_src and tgt[position] not in taken_tgt:
            taken_src.add(src[position])
            taken_tgt.add(tgt[position])
            kept.append(int(position))
    return kept


@pytest.mark.parametrize("seed", range(30))
def test_vectorised_greedy_equals_sequential_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_edges = int(rng.integers(1, 400))
    n_src, n_tgt = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    src = rng.integers(0, n_src, n_edges)
    tgt = rng.integers(0, n_tgt, n_edges)
    score = rng.integers(0, 6, n_edges).astype(np.float32)  # many ties
    assert greedy_one_to_one(src, tgt, score).tolist() == sequential_greedy(src, tgt, score)


def test_greedy_chain_needs_many_rounds() -> None:
    """A path whose scores fall along it: each round can only keep the head."""
    n = 50
    src = np.repeat(np.arange(n), 2)[1:]
    tgt = np.repeat(np.arange(n), 2)[:-1]
    score = -np.arange(src.size, dtype=np.float32)
    assert greedy_one_to_one(src, tgt, score).tolist() == sequential_greedy(src, tgt, score)


def laser_reference(x: np.ndarray, y: np.ndarray, k: int, margin: Margin, mode: Mode):
    """LASER mine_bitexts.py, transcribed with numpy brute-force kNN and its per-pair loops."""
    x, y = unit_rows(x), unit_rows(y)
    sims = x.astype(np.float64) @ y.astype(np.float64).T
    kf, kb = min(k, y.shape[0]), min(k, x.shape[0])
    x2y_ind = np.argsort(-sims, axis=1, kind="stable")[:, :kf]
    y2x_ind = np.argsort(-sims.T, axis=1, kind="stable")[:, :kb]
    x2y_mean = np.take_along_axis(sims, x2y_ind, 1).mean(1)
    y2x_mean = np.take_along_axis(sims.T, y2x_ind, 1).mean(1)
    fn = {
        Margin.RATIO: lambda a, b: a / b,
        Margin.DISTANCE: lambda a, b: a - b,
        Margin.ABSOLUTE: lambda a, b: a,
    }[margin]

    def score_candidates(s, inds, fwd_mean, bwd_mean):
        out = np.zeros(inds.shape)
        for i in range(inds.shape[0]):
            for j in range(inds.shape[1]):
                out[i, j] = fn(s[i, inds[i, j]], (fwd_mean[i] + bwd_mean[inds[i, j]]) / 2)
        return out

    fwd_scores = score_candidates(sims, x2y_ind, x2y_mean, y2x_mean)
    bwd_scores = score_candidates(sims.T, y2x_ind, y2x_mean, x2y_mean)
    fwd_best = x2y_ind[np.arange(x.shape[0]), fwd_scores.argmax(1)]
    bwd_best = y2x_ind[np.arange(y.shape[0]), bwd_scores.argmax(1)]
    out = []
    if mode is Mode.FORWARD:
        out = [(i, j, fwd_scores[i].max()) for i, j in enumerate(fwd_best)]
    elif mode is Mode.BACKWARD:
        out = [(i, j, bwd_scores[j].max()) for j, i in enumerate(bwd_best)]
    elif mode is Mode.INTERSECT:
        out = [(i, j, fwd_scores[i].max()) for i, j in enumerate(fwd_best) if bwd_best[j] == i]
    else:
        indices = np.stack(
            (
                np.concatenate((np.arange(x.shape[0]), bwd_best)),
                np.concatenate((fwd_best, np.arange(y.shape[0]))),
            ),
            axis=1,
        )
        scores = np.concatenate((fwd_scores.max(axis=1), bwd_scores.max(axis=1)))
        seen_src, seen_trg = set(), set()
        for i in np.argsort(-scores, kind="stable"):
            src_ind, trg_ind = indices[i]
            if src_ind not in seen_src and trg_ind not in seen_trg:
                seen_src.add(src_ind)
                seen_trg.add(trg_ind)
                out.append((src_ind, trg_ind, scores[i]))
    return out


@pytest.mark.parametrize("margin", list(Margin))
@pytest.mark.parametrize("mode", list(Mode))
def test_mine_matches_laser_reference(margin: Margin, mode: Mode) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    y = rng.standard_normal((90, 16)).astype(np.float32)
    want = laser_reference(x, y, 4, margin, mode)
    got = mine_rows(x, y, MiningConfig(k=4, margin=margin, mode=mode, device="cpu"))
    assert sorted((int(s), int(t)) for s, t, _ in want) == sorted(
        zip(got.src_index.tolist(), got.tgt_index.tolist(), strict=True)
    )
    reference = {(int(s), int(t)): v for s, t, v in want}
    got_scores = [
        reference[(s, t)]
        for s, t in zip(got.src_index.tolist(), got.tgt_index.tolist(), strict=True)
    ]
    np.testing.assert_allclose(got.score, got_scores, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(got.score) <= 0)


def test_mine_with_k_above_corpus_size() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((3, 8)), rng.standard_normal((2, 8))
    got = mine_rows(x, y, MiningConfig(k=10, device="cpu"))
    want = laser_reference(x, y, 10, Margin.RATIO, Mode.MAX)
    assert len(got) == len(want) == 2


def test_planted_pairs_are_mined_first() -> None:
    rng = np.random.default_rng(9)
    n_pairs, dim = 60, 32
    base = unit_rows(rng.standard_normal((n_pairs, dim)))
    src = np.concatenate([base, rng.standard_normal((40, dim))])
    tgt = np.concatenate(
        [base + 0.05 * rng.standard_normal((n_pairs, dim)), rng.standard_normal((30, dim))]
    )
    src_perm, tgt_perm = rng.permutation(len(src)), rng.permutation(len(tgt))
    pairs = mine_rows(src[src_perm], tgt[tgt_perm], MiningConfig(device="cpu"))
    top = set(
        zip(src_perm[pairs.src_index[:n_pairs]], tgt_perm[pairs.tgt_index[:n_pairs]], strict=True)
    )
    assert top == {(i, i) for i in range(n_pairs)}
    assert pairs.score[n_pairs - 1] > 1.5 > pairs.score[n_pairs]


def test_above_is_the_one_threshold_cut() -> None:
    """``score >= threshold`` in float64: a threshold halfway between two float32 scores keeps
    the higher one only (in float32 it would round onto one of them); an equal score is kept;
    None keeps every pair. The BUCC counts cut the same way."""
    from xretrieve.mining.gold import precision_recall_f1
    from xretrieve.mining.margin import MinedPairs, at_or_above

    high = np.float32(1.05)
    low = np.nextafter(high, np.float32(0))
    score = np.array([1.2, high, low, 0.9], dtype=np.float32)
    pairs = MinedPairs(np.arange(4), np.arange(4)[::-1].copy(), score)
    halfway = (float(high) + float(low)) / 2
    assert np.float32(halfway) in (high, low)  # float32 cannot hold it
    kept = pairs.above(halfway)
    assert kept.score.tolist() == score[:2].tolist() and kept.tgt_index.tolist() == [3, 2]
    assert len(pairs.above(float(low))) == 3  # equal is kept
    assert pairs.above(None) is pairs and len(pairs.above(2.0)) == 0
    assert at_or_above(score, halfway).tolist() == [True, True, False, False]
    assert at_or_above(score, None).all()
    correct = np.array([True, False, True, False])
    assert precision_recall_f1(score, correct, 2, halfway)[3] == len(kept)
