"""Sharded index search on a local Ray cluster (2 CPUs, started here): the same neighbours and
pairs as the single-process path, also when a shard actor is killed mid-search."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from test_index import planted_pair

from xretrieve.index import BuildConfig, SearchConfig, build_index, open_index
from xretrieve.index.search import SearchRequest, search_direction, search_in_process
from xretrieve.mining.margin import MiningConfig, Mode
from xretrieve.mining.through_index import mine_indexes

ray = pytest.importorskip("ray")

CONFIG = MiningConfig(k=5, device="cpu")
SEARCH = SearchConfig(nprobe=2, block_rows=60)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def indexes(tmp_path_factory, cluster):
    root = tmp_path_factory.mktemp("ray_indexes")
    src_files, tgt_files, _, _ = planted_pair(root, n=300, d=16)
    config = BuildConfig(factory="IVF8,PQ4x4", train_size=250, shard_rows=160)
    build_index(src_files, root / "s", config)
    build_index(tgt_files, root / "t", config)
    return open_index(root / "s"), open_index(root / "t")


def test_ray_mining_equals_single_process_mining(indexes) -> None:
    from xretrieve.index.distributed import RaySearch

    src, tgt = indexes
    search = RaySearch("local")  # joins the test's cluster
    assert not search.started
    got = mine_indexes(src, tgt, CONFIG, SEARCH, search=search)
    want = mine_indexes(src, tgt, CONFIG, SEARCH)
    np.testing.assert_array_equal(got.src_index, want.src_index)
    np.testing.assert_array_equal(got.tgt_index, want.tgt_index)
    np.testing.assert_array_equal(got.score, want.score)


def test_killed_actor_is_restarted_and_its_shard_redone(indexes) -> None:
    from xretrieve.index.distributed import RaySearch

    src, tgt = indexes
    search = RaySearch("local", max_restarts=2)
    pids: list[int] = []

    def kill_first_actor(stage: str, done: int, total: int | None) -> None:
        if done == 1:
            pids.append(ray.get(search.actors[0].pid.remote()))
            os.kill(pids[0], signal.SIGKILL)
        if done == total:
            pids.append(ray.get(search.actors[0].pid.remote()))

    rows = np.arange(src.manifest.count)
    request = SearchRequest(tgt, src.rows, rows, 5, None, SEARCH, "forward")
    got = search_direction(request, search, kill_first_actor)
    want = search_direction(request, search_in_process)
    assert len(pids) == 2 and pids[0] != pids[1]  # a new process holds shard 0
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_unreachable_cluster_address_is_a_clear_error(monkeypatch) -> None:
    from xretrieve.core.errors import XRetrieveError
    from xretrieve.index.distributed import connect

    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def refuse(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(XRetrieveError, match=r"cannot reach a Ray cluster at 'auto'.*ray='local'"):
        connect("auto")


def test_shards_populated_by_ray_tasks_equal_a_single_process_build(tmp_path, cluster) -> None:
    _, tgt_files, _, _ = planted_pair(tmp_path, n=300, d=16)
    config = BuildConfig(factory="IVF8,PQ4x4", train_size=250, shard_rows=120)
    local = build_index(tgt_files, tmp_path / "local", config)
    on_ray = build_index(
        tgt_files, tmp_path / "ray", BuildConfig(**{**config.__dict__, "ray": "local"})
    )
    assert len(on_ray.shards) == 3
    assert on_ray.shards == local.shards
    assert sorted(p.name for p in (tmp_path / "ray").iterdir())[0] == "manifest.json"
    assert not (tmp_path / "ray" / "trained.faiss").exists()


def test_more_shards_than_cpus_are_searched_by_a_pool_the_cluster_can_hold(
    tmp_path, cluster
) -> None:
    # 4 and 3 shards on 2 CPUs: one actor per shard (one CPU each) left the others unscheduled
    # and the search waited forever. The pool is sized to the free CPUs instead.
    import threading

    from xretrieve.index.distributed import RaySearch

    src_files, tgt_files, _, _ = planted_pair(tmp_path, n=300, d=16)
    config = BuildConfig(factory="Flat", shard_rows=90)
    build_index(src_files, tmp_path / "s", config)
    build_index(tgt_files, tmp_path / "t", config)
    src, tgt = open_index(tmp_path / "s"), open_index(tmp_path / "t")
    assert (len(src.manifest.shards), len(tgt.manifest.shards)) == (4, 4)
    search = RaySearch("local")
    pools: list[int] = []
    got: list = []

    def note_pool(stage: str, done: int, total: int | None) -> None:
        pools.append(len(search.actors))

    def mine_on_ray() -> None:
        got.append(mine_indexes(src, tgt, CONFIG, SEARCH, search=search, progress=note_pool))

    thread = threading.Thread(target=mine_on_ray, daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the search on Ray never finished"
    want = mine_indexes(src, tgt, CONFIG, SEARCH)
    np.testing.assert_array_equal(got[0].src_index, want.src_index)
    np.testing.assert_array_equal(got[0].tgt_index, want.tgt_index)
    np.testing.assert_array_equal(got[0].score, want.score)
    assert set(pools) == {2}


def test_a_cluster_too_small_or_too_busy_for_the_actors_is_a_clear_error(indexes) -> None:
    from xretrieve.core.errors import XRetrieveError
    from xretrieve.index.distributed import RaySearch

    src, tgt = indexes
    with pytest.raises(XRetrieveError, match=r"has 2 CPUs, and a shard actor needs 3"):
        mine_indexes(src, tgt, CONFIG, SEARCH, search=RaySearch("local", actor_cpus=3))

    @ray.remote(num_cpus=2)
    class Busy:
        def ready(self) -> bool:
            return True

    busy = Busy.remote()
    ray.get(busy.ready.remote())  # both CPUs taken by other work
    try:
        search = RaySearch("local", start_timeout=3)
        with pytest.raises(XRetrieveError, match=r"started 0 of 2 shard actors in 3 s"):
            mine_indexes(src, tgt, CONFIG, SEARCH, search=search)
        assert search.actors == []
    finally:
        ray.kill(busy)


def test_streamed_mining_on_ray_equals_single_process_mining(indexes, tmp_path) -> None:
    # The actors write each block's candidates and Ray tasks score the parts; the driver
    # gathers no neighbour list (RaySearch.__call__ is never used).
    from xretrieve.index.distributed import RaySearch
    from xretrieve.mining.streaming import StreamConfig, Streaming

    class NoGathering(RaySearch):
        def __call__(self, request, progress):
            raise AssertionError("the streaming path gathered a direction's lists")

    src, tgt = indexes
    search = NoGathering("local")
    work = StreamConfig(tmp_path / "work", part_rows=120, pairs_per_part=50)
    for mode in (Mode.MAX, Mode.INTERSECT):
        config = MiningConfig(k=5, device="cpu", mode=mode)
        got = mine_indexes(src, tgt, config, SEARCH, search=search, work=work)
        want = mine_indexes(src, tgt, config, SEARCH, stream=Streaming.OFF)
        np.testing.assert_array_equal(got.src_index, want.src_index)
        np.testing.assert_array_equal(got.tgt_index, want.tgt_index)
        np.testing.assert_array_equal(got.score, want.score)
