"""Streamed mining (``xretrieve.mining.streaming``): the same pairs as the in-memory path, bit
for bit and ties included, at several block, part and merge sizes; resumable; bounded by its
work directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import unit_rows

from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.index import BuildConfig, SearchConfig, build_index, open_index
from xretrieve.index.search import InProcessSearch
from xretrieve.mining.margin import Margin, MiningConfig, Mode
from xretrieve.mining.pair_parts import PAIRS_MANIFEST, read_pair_parts
from xretrieve.mining.streaming import (
    WORK_MANIFEST,
    StreamConfig,
    Streaming,
    in_memory_bytes,
    mine_streamed,
)
from xretrieve.mining.through_index import direction_requests, mine_indexes


def planted_indexes(root: Path, n: int = 240, m: int = 260, d: int = 8, seed: int = 0):
    """Two Flat indexes over planted pairs (half the sources have a noisy copy among the
    targets), with duplicated rows on both sides so that equal scores occur."""
    rng = np.random.default_rng(seed)
    src = unit_rows(rng.standard_normal((n, d)))
    tgt = unit_rows(
        np.concatenate([src[: n // 2] + 0.2 * rng.standard_normal((n // 2, d)),
                        rng.standard_normal((m - n // 2, d))])
    )  # fmt: skip
    src[n - 10 :] = src[:10]  # equal rows: equal sims, means and scores
    tgt[m - 10 :] = tgt[:10]
    np.save(root / "src.npy", src.astype(np.float32))
    np.save(root / "tgt.npy", tgt.astype(np.float32))
    config = BuildConfig(factory="Flat", shard_rows=70)
    build_index([root / "src.npy"], root / "s", config)
    build_index([root / "tgt.npy"], root / "t", config)
    return open_index(root / "s"), open_index(root / "t")


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    return planted_indexes(tmp_path_factory.mktemp("streaming"))


def assert_same_pairs(got, want) -> None:
    np.testing.assert_array_equal(got.src_index, want.src_index)
    np.testing.assert_array_equal(got.tgt_index, want.tgt_index)
    np.testing.assert_array_equal(got.score.view(np.int32), want.score.view(np.int32))


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize(
    ("block_rows", "part_rows", "pairs_per_part", "merge_edges"),
    [(16, 16, 7, 1), (50, 120, 1000, 300), (500, 500, 64, 1 << 20)],
)
def test_streamed_mining_equals_in_memory_mining(
    indexes, tmp_path, mode, block_rows, part_rows, pairs_per_part, merge_edges
) -> None:
    src, tgt = indexes
    config = MiningConfig(k=4, mode=mode, margin=Margin.RATIO)
    search = SearchConfig(block_rows=block_rows, candidate_factor=2)
    # Distinct rows only, as mine_corpora_with_indexes mines: positions, not rows, are paired.
    rows = {"src_rows": np.arange(3, 240, dtype=np.int64), "tgt_rows": np.arange(250)}
    want = mine_indexes(src, tgt, config, search, stream=Streaming.OFF, **rows)
    work = StreamConfig(tmp_path / "work", part_rows, pairs_per_part, merge_edges)
    got = mine_indexes(src, tgt, config, search, stream=Streaming.ON, work=work, **rows)
    assert_same_pairs(got, want)
    assert len(want) > 100


class PlantedLists:
    """A ``StreamingSearch`` that finds given neighbour lists: ``lists[stage]`` = (sims, ids)
    for all query positions (ids are candidate positions), handed out block by block."""

    def __init__(self, lists: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.lists = lists
        self.searched: list[tuple[str, int]] = []

    def __call__(self, request, progress):
        raise AssertionError("the streaming path does not gather lists")

    def stream(self, request, sink, blocks, progress) -> None:
        from xretrieve.index.search import query_blocks

        sims, ids = self.lists[request.stage]
        bounds = query_blocks(request.query_rows, request.config.block_rows)
        for done, number in enumerate(blocks, start=1):
            a, b = bounds[number]
            self.searched.append((request.stage, number))
            sink(number, a, b, sims[a:b], ids[a:b])
            progress(request.stage, done, len(blocks))

    def run_tasks(self, tasks, stage, progress):
        return InProcessSearch().run_tasks(tasks, stage, progress)


def tied_lists(rng, rows: int, candidates: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) sims from four values (best first) and distinct candidate positions near the
    row's own place (so that the two directions agree often): nearly every score has equals,
    and equal means put equal scores on different rows."""
    sims = -np.sort(-rng.integers(1, 5, (rows, k)) / 4, axis=1).astype(np.float32)
    near = np.argsort(rng.random((rows, 5)), axis=1)[:, :k] - 2
    ids = (np.arange(rows)[:, None] * candidates // rows + near) % candidates
    return sims, ids.astype(np.int64)


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("margin", list(Margin))
@pytest.mark.parametrize(
    ("block_rows", "part_rows", "pairs_per_part", "merge_edges"),
    [(1, 1, 1, 1), (7, 20, 13, 40), (64, 128, 50, 1000), (1000, 1000, 1000, 1 << 20)],
)
def test_streamed_selection_equals_select_pairs_with_ties_everywhere(
    indexes, tmp_path, mode, margin, block_rows, part_rows, pairs_per_part, merge_edges
) -> None:
    from xretrieve.mining.margin import select_pairs

    src, tgt = indexes
    rng = np.random.default_rng(block_rows)
    n, m, k = src.manifest.count, tgt.manifest.count, 3
    fwd = tied_lists(rng, n, m, k)
    bwd = tied_lists(rng, m, n, k)
    want = select_pairs(*fwd, *bwd, margin, mode)
    _, counts = np.unique(want.score, return_counts=True)
    assert counts[counts > 1].sum() >= 10  # pairs whose score another pair has
    forward, backward = direction_requests(src, tgt, k, SearchConfig(block_rows=block_rows))
    search = PlantedLists({forward.stage: fwd, backward.stage: bwd})
    work = StreamConfig(tmp_path / "work", part_rows, pairs_per_part, merge_edges)
    parts = mine_streamed(forward, backward, margin, mode, search, work)
    assert_same_pairs(parts.load(), want)
    assert all(len(chunk) <= pairs_per_part for chunk in parts.chunks())


def lists_for(requests, seed: int = 1):
    rng = np.random.default_rng(seed)
    forward, backward = requests
    n, m = forward.query_rows.size, backward.query_rows.size
    return {forward.stage: tied_lists(rng, n, m, 3), backward.stage: tied_lists(rng, m, n, 3)}


class Interrupt:
    """A progress callback that raises ``KeyboardInterrupt`` at the ``after``-th report of
    ``stage`` with done > 0."""

    def __init__(self, stage: str, after: int) -> None:
        self.stage, self.after, self.seen = stage, after, 0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage == self.stage and done:
            self.seen += 1
            if self.seen == self.after:
                raise KeyboardInterrupt


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("mode", [Mode.MAX, Mode.INTERSECT])
@pytest.mark.parametrize(
    ("stage", "after"),
    [("index search forward", 3), ("index search backward", 2), ("margin scores", 2),
     ("pair selection", 3)],
)  # fmt: skip
def test_an_interrupted_run_continues_from_its_finished_files(
    indexes, tmp_path, mode, stage, after
) -> None:
    src, tgt = indexes
    requests = direction_requests(src, tgt, 3, SearchConfig(block_rows=32))
    lists = lists_for(requests)
    work = StreamConfig(tmp_path / "work", part_rows=64, pairs_per_part=10, merge_edges=64)
    want = mine_streamed(*requests, Margin.RATIO, mode, PlantedLists(lists), work).load()
    other = StreamConfig(tmp_path / "again", part_rows=64, pairs_per_part=10, merge_edges=64)
    first = PlantedLists(lists)
    with pytest.raises(KeyboardInterrupt):
        mine_streamed(*requests, Margin.RATIO, mode, first, other, Interrupt(stage, after))
    assert leftovers(other.directory) == []
    finished = read_pair_parts(other.directory, 10)
    assert not finished.complete
    if stage == "pair selection":
        assert len(finished.parts) >= 1
    again = PlantedLists(lists)
    got = mine_streamed(*requests, Margin.RATIO, mode, again, other)
    assert_same_pairs(got.load(), want)
    assert not set(again.searched) & set(first.searched)  # no block searched twice
    # Once complete, only the pairs and the manifests stay; a rerun reads them.
    names = {p.name for p in other.directory.iterdir()}
    assert names == {WORK_MANIFEST, PAIRS_MANIFEST, *(p.file for p in got.parts)}
    assert_same_pairs(mine_streamed(*requests, Margin.RATIO, mode, again, other).load(), want)


def test_a_work_directory_of_other_settings_starts_again(indexes, tmp_path) -> None:
    src, tgt = indexes
    requests = direction_requests(src, tgt, 3, SearchConfig(block_rows=32))
    work = StreamConfig(tmp_path / "work", part_rows=64, pairs_per_part=10)
    mine_streamed(*requests, Margin.RATIO, Mode.MAX, PlantedLists(lists_for(requests)), work)
    lists = lists_for(requests, seed=2)
    want = mine_streamed(
        *requests, Margin.RATIO, Mode.MAX, PlantedLists(lists), StreamConfig(tmp_path / "w2")
    ).load()
    # Same directory, other mode first: the finished pairs are not taken for this run's.
    mine_streamed(*requests, Margin.RATIO, Mode.FORWARD, PlantedLists(lists), work)
    got = mine_streamed(*requests, Margin.RATIO, Mode.MAX, PlantedLists(lists), work)
    assert_same_pairs(got.load(), want)


def test_the_work_directory_goes_through_the_output_guard(indexes, tmp_path) -> None:
    src, tgt = indexes
    requests = direction_requests(src, tgt, 3, SearchConfig(block_rows=32))
    search = PlantedLists(lists_for(requests))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="not an earlier mine"):
        mine_streamed(*requests, Margin.RATIO, Mode.MAX, search, StreamConfig(foreign))
    assert (foreign / "notes.txt").read_text() == "mine\n" and not search.searched
    inside = StreamConfig(src.directory / "work")
    with pytest.raises(InputError, match="inside the input directory"):
        mine_streamed(*requests, Margin.RATIO, Mode.MAX, search, inside)
    # An earlier run's directory with a file of the user's added is refused too.
    work = StreamConfig(tmp_path / "work")
    mine_streamed(*requests, Margin.RATIO, Mode.MAX, search, work)
    (work.directory / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="keep.txt"):
        mine_streamed(*requests, Margin.RATIO, Mode.MAX, search, work)


def test_a_second_run_in_the_same_work_directory_fails_at_once(indexes, tmp_path) -> None:
    """Two runs writing one work directory would overwrite each other's parts: the second is
    refused before any search while the first holds the directory's lock."""
    from xretrieve.core.outputs import lock_path, output_lock

    src, tgt = indexes
    requests = direction_requests(src, tgt, 3, SearchConfig(block_rows=32))
    search = PlantedLists(lists_for(requests))
    work = StreamConfig(tmp_path / "work")
    with output_lock(work.directory, job="streamed mining", option="work_dir"):
        with pytest.raises(InputError, match="another streamed mining of this") as error:
            mine_streamed(*requests, Margin.RATIO, Mode.MAX, search, work)
    assert error.value.arguments == ("work_dir",) and not search.searched
    assert not lock_path(work.directory).exists()
    done = mine_streamed(*requests, Margin.RATIO, Mode.MAX, search, work)
    assert done.complete and not lock_path(work.directory).exists()


def test_bad_stream_settings_name_their_argument(indexes) -> None:
    src, tgt = indexes
    with pytest.raises(ArgumentError, match="part_rows"):
        StreamConfig(Path("w"), part_rows=0)
    with pytest.raises(ArgumentError, match="work is where"):
        mine_indexes(
            src, tgt, MiningConfig(k=3), stream=Streaming.OFF, work=StreamConfig(Path("w"))
        )


class CountingSearch(InProcessSearch):
    def __init__(self) -> None:
        self.streamed = 0

    def stream(self, request, sink, blocks, progress) -> None:
        self.streamed += 1
        super().stream(request, sink, blocks, progress)


def test_auto_streams_when_the_lists_would_not_fit_in_memory(indexes, monkeypatch) -> None:
    import xretrieve.mining.streaming as streaming

    src, tgt = indexes
    config, search_config = MiningConfig(k=3), SearchConfig(block_rows=64)
    requests = direction_requests(src, tgt, 3, search_config)
    need = in_memory_bytes(requests, [3 * 4, 3 * 4])
    want = mine_indexes(src, tgt, config, search_config, stream=Streaming.OFF)
    for memory, streams in ((2 * need, False), (2 * need - 2, True)):
        monkeypatch.setattr(streaming, "available_memory", lambda memory=memory: memory)
        search = CountingSearch()
        got = mine_indexes(src, tgt, config, search_config, search=search)
        assert search.streamed == (2 if streams else 0)
        assert_same_pairs(got, want)
