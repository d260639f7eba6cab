"""BUCC scoring: threshold search edge cases, duplicate texts, planted-pair evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import write_planted_split

from xretrieve.core.errors import InputError
from xretrieve.evaluation.bucc import score_bucc
from xretrieve.formats import Corpus, read_bucc_split
from xretrieve.mining.corpus import CorpusMining, id_candidates, mine_corpora
from xretrieve.mining.gold import gold_mask, optimize_threshold, precision_recall_f1, tune_threshold
from xretrieve.mining.margin import MinedPairs, MiningConfig

CPU = MiningConfig(device="cpu")


def test_threshold_halfway_to_the_next_candidate() -> None:
    threshold, f1 = optimize_threshold(np.array([5.0, 4, 3, 2]), np.array([1, 1, 0, 0], bool), 2)
    assert (threshold, f1) == (3.5, 1.0)


def test_all_correct_best_is_last_candidate() -> None:
    score, correct = np.array([3.0, 2.0, 1.0]), np.ones(3, bool)
    threshold, f1 = optimize_threshold(score, correct, 3)
    assert (threshold, f1) == (1.0, 1.0)
    assert precision_recall_f1(score, correct, 3, threshold) == (100.0, 100.0, 100.0, 3)


def test_no_correct_candidate_extracts_nothing() -> None:
    score = np.array([1.2, 1.1, 1.0], np.float32)
    threshold, f1 = optimize_threshold(score, np.zeros(3, bool), 5)
    assert f1 == 0.0 and threshold > 1.2
    assert precision_recall_f1(score, np.zeros(3, bool), 5, threshold) == (0.0, 0.0, 0.0, 0)


def test_ties_are_never_split() -> None:
    """Stopping after the first 4.0 (F1 1.0) is impossible: a threshold keeps both or neither."""
    score, correct = np.array([5.0, 4.0, 4.0, 3.0]), np.array([1, 1, 0, 0], bool)
    threshold, f1 = optimize_threshold(score, correct, 2)
    assert threshold == 3.5 and f1 == pytest.approx(0.8)
    assert precision_recall_f1(score, correct, 2, threshold)[2] == pytest.approx(80.0)


def test_first_of_equal_f1_wins_and_unsorted_input() -> None:
    # Best first: 4 (T) -> F1 2/3; 3 (F); 2 (T) -> F1 2*2/(3+2) = 0.8; 1 (T) -> 2*3/(4+2)... n_gold 4
    score = np.array([1.0, 3.0, 4.0, 2.0])
    correct = np.array([1, 0, 1, 1], bool)
    threshold, f1 = optimize_threshold(score, correct, 4)
    assert threshold == 1.0 and f1 == pytest.approx(2 * 3 / (4 + 4))
    threshold, f1 = optimize_threshold(np.array([2.0, 1.0]), np.array([1, 0], bool), 3)
    assert (threshold, f1) == (1.5, 0.5)  # 2*1/(1+3); extracting both also... 2*1/(2+3)=0.4


@pytest.mark.parametrize("seed", range(20))
def test_threshold_reaches_the_best_achievable_f1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    score = rng.integers(0, 10, n).astype(np.float64) / 4  # many ties
    correct = rng.random(n) < 0.4
    n_gold = int(correct.sum()) + int(rng.integers(0, 5)) or 1
    threshold, f1 = optimize_threshold(score, correct, n_gold)
    achievable = [precision_recall_f1(score, correct, n_gold, t)[2] for t in np.unique(score)]
    assert 100 * f1 == pytest.approx(max(achievable))
    assert precision_recall_f1(score, correct, n_gold, threshold)[2] == pytest.approx(100 * f1)


def test_empty_candidates() -> None:
    threshold, f1 = optimize_threshold(np.array([]), np.array([], bool), 3)
    assert f1 == 0.0 and threshold == float("inf")


def test_text_under_several_ids_maps_to_no_id() -> None:
    """Mining sees 'x' and 'x ' as distinct texts; BUCC scoring strips them, finds them
    repeated, and drops their candidates (LASER/XTREME read_sent2id)."""
    src = Corpus(Path("s"), ("x", "x ", "y"), ("s1", "s2", "s3"))
    tgt = Corpus(Path("t"), ("a", "b", "c"), ("t1", "t2", "t3"))
    pairs = MinedPairs(
        np.array([2, 0, 1]), np.array([0, 1, 2]), np.array([3.0, 2.0, 1.0], np.float32)
    )
    rows = np.arange(3)
    mining = CorpusMining(rows, rows, rows, rows, pairs)
    candidates = id_candidates(mining, src, tgt)
    assert candidates.src_index.tolist() == [2] and candidates.tgt_index.tolist() == [0]
    gold = frozenset({("s3", "t1"), ("s1", "t2")})
    assert gold_mask(candidates, gold, src, tgt).tolist() == [True]


def test_duplicate_gold_text_costs_recall(tmp_path: Path) -> None:
    planted = write_planted_split(tmp_path, None, "training", duplicate_src=True)
    split = read_bucc_split(tmp_path, "de", "training")
    threshold, tune_f1 = tune_threshold(split, planted.src_emb, planted.tgt_emb, CPU)
    assert tune_f1 == pytest.approx(100 * 2 * 39 / (39 + 40))  # precision 1, recall 39/40
    mining = mine_corpora(split.src, split.tgt, planted.src_emb, planted.tgt_emb, CPU)
    assert mining.src_rows.size == len(split.src) - 1  # the duplicate was mined once


@pytest.fixture()
def planted_dir(tmp_path: Path) -> Path:
    write_planted_split(tmp_path, tmp_path / "emb", "training", seed=0)
    write_planted_split(tmp_path, tmp_path / "emb", "test", seed=1, n_pairs=30)
    return tmp_path


def test_evaluate_bucc_on_planted_pairs(planted_dir: Path) -> None:
    from xretrieve.mining.sources import DirectorySource, embed_pair

    source = DirectorySource(planted_dir / "emb", planted_dir)
    tune = read_bucc_split(planted_dir, "de", "training")
    test = read_bucc_split(planted_dir, "de", "test")
    result = score_bucc(
        tune,
        *embed_pair(source, tune.src, tune.tgt),
        test,
        *embed_pair(source, test.src, test.tgt),
        CPU,
    )
    assert (result.precision, result.recall, result.f1) == (100.0, 100.0, 100.0)
    assert result.tune_f1 == 100.0 and result.oracle_f1 == 100.0
    assert result.n_gold == 30 and result.n_extracted == 30 and result.n_candidates >= 30
    assert 1.0 < result.threshold


def test_evaluate_bucc_without_eval_gold(tmp_path: Path) -> None:
    tune = write_planted_split(tmp_path, None, "training")
    test = write_planted_split(tmp_path, None, "test", seed=2, write_gold=False)
    result = score_bucc(
        read_bucc_split(tmp_path, "de", "training"), tune.src_emb, tune.tgt_emb,
        read_bucc_split(tmp_path, "de", "test"), test.src_emb, test.tgt_emb, CPU,
    )  # fmt: skip
    assert result.precision is None and result.f1 is None and result.oracle_f1 is None
    assert result.n_gold is None and result.n_extracted == 40 and result.tune_f1 == 100.0


def test_tuning_split_needs_gold(tmp_path: Path) -> None:
    planted = write_planted_split(tmp_path, None, "training", write_gold=False)
    split = read_bucc_split(tmp_path, "de", "training")
    with pytest.raises(InputError, match="de-en.training.gold: the tuning split"):
        tune_threshold(split, planted.src_emb, planted.tgt_emb, CPU)


def test_embedding_dimensions_must_match(tmp_path: Path) -> None:
    planted = write_planted_split(tmp_path, None, "training")
    split = read_bucc_split(tmp_path, "de", "training")
    with pytest.raises(InputError, match="embedding dimension 16 differs"):
        mine_corpora(split.src, split.tgt, planted.src_emb, planted.tgt_emb[:, :16], CPU)
