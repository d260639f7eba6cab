"""Approximate indexes: top-k merge against brute force, memory-mapped rows, the size-based
default, building and checking index directories, and mining through indexes against exact
mining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import unit_rows, write_planted_split

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.formats import read_bucc_split
from xretrieve.index import (
    BuildConfig,
    SearchConfig,
    build_index,
    default_factory,
    merge_topk,
    open_index,
)
from xretrieve.index.build import pq_subquantizers
from xretrieve.index.manifest import MANIFEST, compatible_versions
from xretrieve.index.search import SearchRequest, search_direction, search_in_process
from xretrieve.index.sources import EmbeddingRows
from xretrieve.index.topk import sort_topk
from xretrieve.mining.corpus import mine_corpora
from xretrieve.mining.margin import Margin, MiningConfig, Mode, mine_rows
from xretrieve.mining.through_index import IndexMining, mine_corpora_with_indexes, mine_indexes

EXACT = MiningConfig(k=4, device="cpu")


def brute_topk(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    out_s, out_i = [], []
    for row_s, row_i in zip(sims.tolist(), ids.tolist(), strict=True):
        ranked = sorted(zip(row_s, row_i, strict=True), key=lambda e: (e[1] < 0, -e[0], e[1]))
        out_s.append([s for s, _ in ranked[:k]])
        out_i.append([i for _, i in ranked[:k]])
    return np.array(out_s, dtype=np.float32), np.array(out_i, dtype=np.int64)


def test_merge_topk_equals_brute_force_over_the_whole_database() -> None:
    rng = np.random.default_rng(0)
    n, m, k = 30, 200, 7
    # Rounded similarities: many ties, which must be broken by global id.
    full = np.round(rng.uniform(-1, 1, (n, m)), 1).astype(np.float32)
    bounds = [0, 13, 90, 91, 200]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        local_k = min(k, b - a)
        order = np.argsort(-full[:, a:b], axis=1, kind="stable")[:, :local_k]
        parts.append((np.take_along_axis(full[:, a:b], order, axis=1), order + a))
    sims, ids = merge_topk(parts[::-1], k)  # shard order must not matter
    want_s, want_i = brute_topk(full, np.broadcast_to(np.arange(m), (n, m)), k)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_array_equal(sims, want_s)


def test_sort_topk_puts_missing_neighbours_last() -> None:
    sims = np.array([[0.5, -3e38, 0.9, 0.5]], dtype=np.float32)
    ids = np.array([[4, -1, 2, 1]])
    got_s, got_i = sort_topk(sims, ids, 4)
    assert got_i.tolist() == [[2, 1, 4, -1]]
    assert got_s[0, :3].tolist() == pytest.approx([0.9, 0.5, 0.5])


def test_embedding_rows_read_across_files_and_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 6)).astype(np.float32)
    b = rng.standard_normal((7, 6)).astype(np.float16)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    rows = EmbeddingRows([tmp_path / "a.npy", tmp_path / "b.npy"])
    whole = unit_rows(np.concatenate([a, b.astype(np.float32)]))
    assert rows.count == 12 and rows.dim == 6
    np.testing.assert_allclose(rows.block(3, 9), whole[3:9], rtol=1e-6)
    ids = np.array([[11, 0], [4, 4]])
    np.testing.assert_allclose(rows.rows(ids), whole[ids], rtol=1e-6)


def test_embedding_rows_reject_nan_and_mixed_dimensions(tmp_path: Path) -> None:
    bad = np.ones((4, 3), dtype=np.float32)
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "wide.npy", np.ones((2, 5), dtype=np.float32))
    with pytest.raises(InputError, match=r"nan\.npy: NaN or infinite value in row 2"):
        EmbeddingRows([tmp_path / "nan.npy"]).block(1, 4)
    with pytest.raises(InputError, match=r"nan\.npy: NaN or infinite value in row 2"):
        EmbeddingRows([tmp_path / "nan.npy"]).rows(np.array([3, 2, 0]))
    with pytest.raises(InputError, match=r"wide\.npy: has dimension 5, but .* has 3"):
        EmbeddingRows([tmp_path / "nan.npy", tmp_path / "wide.npy"])


def test_default_factory_follows_stopes_sizes_and_adapts_small_dimensions() -> None:
    assert default_factory(10_000, 1024) == ("Flat", "")
    assert default_factory(10_001, 1024) == ("OPQ64,IVF1024,PQ64", "")
    assert default_factory(80_001, 1024)[0] == "OPQ64,IVF2048,PQ64"
    assert default_factory(1_000_000, 384)[0] == "OPQ64,IVF16384,PQ64"
    assert default_factory(600_000_000, 1024)[0] == "OPQ64,IVF262144,PQ64"
    factory, note = default_factory(50_000, 48)
    assert factory == "OPQ48,IVF1024,PQ48" and "64 does not divide dimension 48" in note
    assert pq_subquantizers(100) == 50 and pq_subquantizers(32) == 32


def test_faiss_versions_compatible_on_major_minor() -> None:
    assert compatible_versions("1.15.1", "1.15.3")
    assert not compatible_versions("1.9.0", "1.15.1")


def planted_pair(tmp_path: Path, n: int = 300, d: int = 16, seed: int = 0):
    """Source rows in two files (float32 + float16), targets = noisy sources + noise rows."""
    rng = np.random.default_rng(seed)
    src = unit_rows(rng.standard_normal((n, d)))
    tgt = unit_rows(
        np.concatenate(
            [src[: n // 2] + 0.3 * rng.standard_normal((n // 2, d)) / np.sqrt(d),
             rng.standard_normal((n - n // 2 + 20, d))]
        )
    )  # fmt: skip
    np.save(tmp_path / "src0.npy", src[:110])
    np.save(tmp_path / "src1.npy", src[110:].astype(np.float16))
    np.save(tmp_path / "tgt.npy", tgt)
    src_used = np.concatenate([src[:110], src[110:].astype(np.float16).astype(np.float32)])
    return [tmp_path / "src0.npy", tmp_path / "src1.npy"], [tmp_path / "tgt.npy"], src_used, tgt


def pair_scores(pairs) -> dict[tuple[int, int], float]:
    keys = zip(pairs.src_index.tolist(), pairs.tgt_index.tolist(), strict=True)
    return dict(zip(keys, pairs.score.tolist(), strict=True))


@pytest.mark.parametrize(
    ("factory", "nprobe", "rescore"),
    [("Flat", 1, False), ("Flat", 1, True), ("IVF8,Flat", 8, False), ("IVF8,Flat", 8, True)],
)
def test_exhaustive_indexes_mine_exactly_what_exact_mining_mines(
    tmp_path: Path, factory: str, nprobe: int, rescore: bool, monkeypatch
) -> None:
    # Flat, or IVF visiting every list, finds the exact neighbours: over 4 and 3 shards with
    # margins over the merged top k, the pairs and scores must be those of exact mining.
    monkeypatch.setattr("xretrieve.index.search.RESCORE_ROWS", 40)  # several re-scoring steps
    src_files, tgt_files, src, tgt = planted_pair(tmp_path)
    config = BuildConfig(factory=factory, shard_rows=80, block_rows=33)
    build_index(src_files, tmp_path / "src_index", config)
    build_index(tgt_files, tmp_path / "tgt_index", BuildConfig(factory=factory, shard_rows=130))
    for mode in (Mode.MAX, Mode.INTERSECT):
        mining = MiningConfig(k=4, margin=Margin.RATIO, mode=mode, device="cpu")
        got = mine_indexes(
            open_index(tmp_path / "src_index"),
            open_index(tmp_path / "tgt_index"),
            mining,
            SearchConfig(nprobe=nprobe, block_rows=50, rescore=rescore),
        )
        want = pair_scores(mine_rows(src, tgt, mining))
        have = pair_scores(got)
        assert have.keys() == want.keys()
        assert [have[p] for p in want] == pytest.approx(list(want.values()), abs=1e-5)


def test_per_shard_margins_would_differ_from_the_global_merge(tmp_path: Path) -> None:
    # The reason for merging before the margin: with each shard's own neighbourhood the
    # margins (and so the pairs) change. Guards against a merge that silently keeps one shard.
    src_files, tgt_files, src, tgt = planted_pair(tmp_path)
    build_index(src_files, tmp_path / "s", BuildConfig(factory="Flat", shard_rows=80))
    build_index(tgt_files, tmp_path / "t", BuildConfig(factory="Flat", shard_rows=130))
    got = pair_scores(mine_indexes(open_index(tmp_path / "s"), open_index(tmp_path / "t"), EXACT))
    shard_only = pair_scores(mine_rows(src, tgt[:130], EXACT))
    assert got.keys() != shard_only.keys()


def test_approximate_index_keeps_nearly_all_exact_pairs(tmp_path: Path) -> None:
    src_files, tgt_files, src, tgt = planted_pair(tmp_path, n=1200, d=32)
    config = BuildConfig(factory="IVF16,PQ8x4", train_size=1000, seed=3, shard_rows=500)
    build_index(src_files, tmp_path / "s", config)
    build_index(tgt_files, tmp_path / "t", config)
    got = mine_indexes(
        open_index(tmp_path / "s"), open_index(tmp_path / "t"), EXACT, SearchConfig(nprobe=4)
    )
    want = mine_rows(src, tgt, EXACT)
    top = {(s, t) for s, t in zip(want.src_index[:500], want.tgt_index[:500], strict=True)}
    found = set(zip(got.src_index.tolist(), got.tgt_index.tolist(), strict=True))
    assert len(top & found) >= 0.98 * len(top)


def neighbours_through_index(tmp_path: Path, factory: str, config: SearchConfig, k: int):
    """Top ``k`` of 60 queries among 600 clustered 16-d rows through a ``factory`` index, and
    the exact top ``k``."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 16))
    database = unit_rows(centres[rng.integers(0, 30, 600)] + 0.4 * rng.standard_normal((600, 16)))
    queries = unit_rows(database[:60] + 0.2 * rng.standard_normal((60, 16)))
    tmp_path.mkdir(exist_ok=True)
    np.save(tmp_path / "db.npy", database)
    np.save(tmp_path / "q.npy", queries)
    build_index([tmp_path / "db.npy"], tmp_path / "i", BuildConfig(factory=factory, seed=1))
    got = search_direction(
        SearchRequest(
            open_index(tmp_path / "i"), EmbeddingRows([tmp_path / "q.npy"]), np.arange(60), k,
            None, config, "search",
        ),
        search_in_process,
    )  # fmt: skip
    exact = np.argsort(-(queries @ database.T), axis=1, kind="stable")[:, :k]
    return got, exact


def test_rescoring_a_wider_candidate_list_recovers_neighbours_pq_misses(tmp_path: Path) -> None:
    # PQ4x4 codes 4 dimensions in 4 bits: its own top 8 misses many true neighbours. Re-scoring
    # 8 x 75 candidates (every row of this flat PQ index) must give the exact top 8; re-scoring
    # only the index's own top 8 re-orders them and misses what PQ missed.
    k = 8
    (sims, ids), exact = neighbours_through_index(
        tmp_path, "PQ4x4", SearchConfig(candidate_factor=75), k
    )
    np.testing.assert_array_equal(ids, exact)
    assert sims.shape == (60, k) and np.all(np.diff(sims, axis=1) <= 0)
    (_, own_ids), _ = neighbours_through_index(
        tmp_path / "own", "PQ4x4", SearchConfig(candidate_factor=1), k
    )

    def recall(got: np.ndarray) -> float:
        return np.mean([len(set(a) & set(b)) for a, b in zip(got, exact, strict=True)]) / k

    assert recall(own_ids) < 0.9
    (_, wide_ids), _ = neighbours_through_index(tmp_path / "wide", "PQ4x4", SearchConfig(), k)
    assert recall(wide_ids) > recall(own_ids) + 0.05


def test_candidates_the_index_did_not_find_are_never_kept(tmp_path: Path) -> None:
    # One inverted list of 16 per query holds ~40 rows: asking for 8 x 20 candidates leaves
    # many -1 entries, which must not be re-scored as row 0 (or row -1) and kept.
    (sims, ids), _ = neighbours_through_index(
        tmp_path, "IVF16,Flat", SearchConfig(nprobe=1, candidate_factor=20), 8
    )
    assert ids.shape == (60, 8) and np.all(ids >= 0) and np.all(np.isfinite(sims))
    for row in ids:
        assert len(set(row.tolist())) == 8


def test_candidate_factor_must_be_positive() -> None:
    with pytest.raises(ValueError, match="candidate_factor must be at least 1"):
        SearchConfig(candidate_factor=0)


def test_duplicate_texts_are_mined_once_as_exact_mining_does(tmp_path: Path) -> None:
    write_planted_split(tmp_path / "data", tmp_path / "emb", "test", duplicate_src=True)
    split = read_bucc_split(tmp_path / "data", "de", "test")
    emb = tmp_path / "emb" / "bucc2018"
    src_npy, tgt_npy = emb / "de-en.test.de.npy", emb / "de-en.test.en.npy"
    build_index([src_npy], tmp_path / "de", BuildConfig(factory="Flat", shard_rows=30))
    build_index([tgt_npy], tmp_path / "en", BuildConfig(factory="Flat", shard_rows=40))
    got = mine_corpora_with_indexes(
        split.src, split.tgt, IndexMining(tmp_path / "de", tmp_path / "en"), EXACT
    )
    src_emb = np.load(src_npy).astype(np.float32)
    tgt_emb = np.load(tgt_npy).astype(np.float32)
    want = mine_corpora(split.src, split.tgt, src_emb, tgt_emb, EXACT)
    np.testing.assert_array_equal(got.src_rows, want.src_rows)
    assert pair_scores(got.pairs).keys() == pair_scores(want.pairs).keys()
    np.testing.assert_allclose(np.sort(got.pairs.score), np.sort(want.pairs.score), rtol=1e-5)


def test_build_writes_manifest_and_same_seed_gives_same_index(tmp_path: Path) -> None:
    _, tgt_files, _, _ = planted_pair(tmp_path, n=700, d=16)
    config = BuildConfig(factory="IVF8,PQ4x4", train_size=600, seed=7, shard_rows=300)
    first = build_index(tgt_files, tmp_path / "a", config)
    again = build_index(tgt_files, tmp_path / "b", config)
    other = build_index(tgt_files, tmp_path / "c", BuildConfig(**{**config.__dict__, "seed": 8}))
    data = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert data["factory"] == "IVF8,PQ4x4" and data["dimension"] == 16 and data["count"] == 720
    assert data["train_size"] == 600 and data["seed"] == 7
    assert [s["rows"] for s in data["shards"]] == [300, 300, 120]
    assert data["sources"][0]["sha256"] and data["faiss_version"]
    assert [s.sha256 for s in first.shards] == [s.sha256 for s in again.shards]
    assert [s.sha256 for s in first.shards] != [s.sha256 for s in other.shards]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        MANIFEST, "shard-00000.faiss", "shard-00001.faiss", "shard-00002.faiss"
    ]  # fmt: skip


def test_too_few_training_points_says_how_many_and_writes_nothing(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((500, 8)))
    np.save(tmp_path / "y.npy", np.random.default_rng(0).standard_normal((50, 8)).astype("f4"))
    with pytest.raises(
        InputError, match=r"too few training points for IVF1024,Flat: 50 .*1024 needed"
    ):
        build_index([tmp_path / "y.npy"], tmp_path / "out", BuildConfig(factory="IVF1024,Flat"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="float16 or float32"):  # x.npy is float64
        build_index([tmp_path / "x.npy"], tmp_path / "out")
    with pytest.raises(XRetrieveError, match="FAISS cannot build index 'PQ3'"):
        build_index([tmp_path / "y.npy"], tmp_path / "out", BuildConfig(factory="PQ3"))
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    src_files, tgt_files, _, _ = planted_pair(tmp_path, n=150, d=8)
    build_index(src_files, tmp_path / "s", BuildConfig(factory="Flat", shard_rows=40))
    build_index(tgt_files, tmp_path / "t", BuildConfig(factory="Flat", shard_rows=40))
    return tmp_path / "s", tmp_path / "t"


def edit_manifest(directory: Path, **changes) -> None:
    path = directory / MANIFEST
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_index_from_another_faiss_version_names_both_versions(built) -> None:
    import faiss

    src, _ = built
    edit_manifest(src, faiss_version="1.7.2")
    with pytest.raises(InputError, match=rf"FAISS 1\.7\.2, this is FAISS {faiss.__version__}"):
        open_index(src)


def test_missing_truncated_or_altered_shards_are_refused(built) -> None:
    src, _ = built
    shard = src / "shard-00001.faiss"
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(InputError, match=r"shard-00001\.faiss: .*bytes, manifest.json says.*trunc"):
        open_index(src)
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(InputError, match="SHA-256 differs"):
        open_index(src)
    shard.unlink()
    with pytest.raises(InputError, match=r"shard-00001\.faiss: index shard missing"):
        open_index(src)


def test_manifest_not_matching_its_files_is_refused(built) -> None:
    src, tgt = built
    edit_manifest(src, count=99)
    with pytest.raises(InputError, match="shards hold 150 rows, the manifest says 99"):
        open_index(src)
    manifest = json.loads((tgt / MANIFEST).read_text())
    np.save(manifest["sources"][0]["path"], np.zeros((3, 8), dtype=np.float32))
    with pytest.raises(InputError, match=r"tgt\.npy: is \(3, 8\) float32, the index manifest"):
        open_index(tgt)
    (tgt / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="unreadable index manifest"):
        open_index(tgt)
    with pytest.raises(InputError, match="no index manifest here"):
        open_index(tgt / "nowhere")


def test_index_dimensions_must_agree(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((5, 8), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.ones((5, 4), dtype=np.float32))
    build_index([tmp_path / "a.npy"], tmp_path / "a")
    build_index([tmp_path / "b.npy"], tmp_path / "b")
    with pytest.raises(InputError, match=r"index dimension 4 differs from .*'s 8"):
        mine_indexes(open_index(tmp_path / "a"), open_index(tmp_path / "b"), EXACT)


def test_too_few_neighbours_found_asks_for_a_larger_nprobe(tmp_path: Path) -> None:
    _, tgt_files, _, _ = planted_pair(tmp_path, n=400, d=8)
    build_index(tgt_files, tmp_path / "t", BuildConfig(factory="IVF32,Flat"))
    index = open_index(tmp_path / "t")
    with pytest.raises(XRetrieveError, match=r"fewer than k=100 .*nprobe=1\); raise nprobe"):
        mine_indexes(index, index, MiningConfig(k=100, device="cpu"), SearchConfig(nprobe=1))


def test_cuda_build_without_a_faiss_gpu_is_refused(tmp_path: Path) -> None:
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("FAISS sees a GPU here")
    np.save(tmp_path / "x.npy", np.ones((5, 4), dtype=np.float32))
    with pytest.raises(XRetrieveError, match="'cuda' requested, but FAISS sees no GPU"):
        build_index([tmp_path / "x.npy"], tmp_path / "i", BuildConfig(device="cuda"))


@pytest.mark.gpu
def test_gpu_built_exhaustive_index_mines_as_exact(tmp_path: Path) -> None:
    # IVF k-means on the GPU and adding through a GPU copy; probing every list must still
    # return the exact neighbours, so the pairs are exact mining's.
    src_files, tgt_files, src, tgt = planted_pair(tmp_path, n=2000, d=32)
    config = BuildConfig(factory="IVF16,Flat", device="cuda", shard_rows=700)
    build_index(src_files, tmp_path / "s", config)
    build_index(tgt_files, tmp_path / "t", config)
    got = mine_indexes(
        open_index(tmp_path / "s"), open_index(tmp_path / "t"), EXACT, SearchConfig(nprobe=16)
    )
    assert pair_scores(got).keys() == pair_scores(mine_rows(src, tgt, EXACT)).keys()


@pytest.mark.gpu
def test_gpu_search_of_an_exhaustive_index_mines_as_exact(tmp_path: Path) -> None:
    src_files, tgt_files, src, tgt = planted_pair(tmp_path, n=2000, d=32)
    config = BuildConfig(factory="IVF16,Flat", device="cpu", shard_rows=700)
    build_index(src_files, tmp_path / "s", config)
    build_index(tgt_files, tmp_path / "t", config)
    got = mine_indexes(
        open_index(tmp_path / "s"), open_index(tmp_path / "t"), EXACT, SearchConfig(nprobe=16)
    )
    assert pair_scores(got).keys() == pair_scores(mine_rows(src, tgt, EXACT)).keys()


def test_auto_nprobe_visits_a_quarter_of_the_lists_within_stopes_bounds(tmp_path: Path) -> None:
    from xretrieve.index.search import ShardSearcher, auto_nprobe, probes

    lists = [16, 256, 1024, 4096, 262_144]
    assert [auto_nprobe(n) for n in lists] == [16, 128, 256, 256, 256]
    assert probes(64, 1024) == 64 and probes(4096, 1024) == 1024 and probes(None, 1024) == 256
    _, tgt_files, _, _ = planted_pair(tmp_path, n=400, d=8)
    build_index(tgt_files, tmp_path / "t", BuildConfig(factory="IVF32,Flat"))
    index = open_index(tmp_path / "t")
    shard = index.manifest.shards[0]
    assert ShardSearcher(index.directory, shard, None, None).nprobe == 32
    assert ShardSearcher(index.directory, shard, 3, None).nprobe == 3
