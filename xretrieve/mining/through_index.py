"""Mining two corpora through their indexes: the approximate counterpart of
``xretrieve.mining.corpus.mine_corpora`` (distinct texts, same ``CorpusMining`` result)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.formats import Corpus, distinct_texts
from xretrieve.index.manifest import MANIFEST
from xretrieve.index.search import (
    InProcessSearch,
    OpenIndex,
    SearchConfig,
    SearchRequest,
    ShardedSearch,
    StreamingSearch,
    block_finish,
    check_pair,
    open_index,
    search_direction,
    search_in_process,
)
from xretrieve.mining.corpus import CorpusMining
from xretrieve.mining.margin import MinedPairs, MiningConfig, select_pairs
from xretrieve.mining.streaming import (
    StreamConfig,
    Streaming,
    lists_fit_in_memory,
    mine_streamed,
    temporary_work_directory,
)


@dataclass(frozen=True)
class IndexMining:
    """Where the two indexes are, how to search them, and ``ray``: None for one process, else
    ``local``, ``auto`` or a cluster address; ``stream``: whether the margins and the pair
    selection stream through files (``xretrieve.mining.streaming``), in ``work_dir`` (None: a
    temporary directory)."""

    src_dir: Path
    tgt_dir: Path
    search: SearchConfig = SearchConfig()
    ray: str | None = None
    stream: Streaming = Streaming.AUTO
    work_dir: Path | None = None


@dataclass(frozen=True)
class IndexCorpusMining(CorpusMining):
    """``CorpusMining`` through indexes, with the inverted lists visited per query in the
    source and the target index (``src_nprobe``, ``tgt_nprobe``; None for an index without
    lists): the values ``--nprobe`` (or its default) gave."""

    src_nprobe: int | None = None
    tgt_nprobe: int | None = None


def _check_rows(index: OpenIndex, corpus: Corpus) -> None:
    if index.manifest.count != len(corpus):
        raise InputError(
            index.directory / MANIFEST,
            f"the index has {index.manifest.count} rows but {corpus.path} has {len(corpus)} "
            "lines; they must match",
        )


def mine_corpora_with_indexes(
    src: Corpus,
    tgt: Corpus,
    indexes: IndexMining,
    config: MiningConfig,
    *,
    progress: ProgressCallback | None = None,
) -> IndexCorpusMining:
    """Mine the distinct texts of ``src`` and ``tgt`` through the indexes built from their
    embeddings (one row per corpus line, as ``index build`` was given them)."""
    src_index, tgt_index = open_index(indexes.src_dir), open_index(indexes.tgt_dir)
    _check_rows(src_index, src)
    _check_rows(tgt_index, tgt)
    src_rows, src_inverse = distinct_texts(src.texts)
    tgt_rows, tgt_inverse = distinct_texts(tgt.texts)
    search = None
    if indexes.ray is not None:
        from xretrieve.index.distributed import RaySearch

        search = RaySearch(indexes.ray)
    try:
        pairs = mine_indexes(
            src_index,
            tgt_index,
            config,
            indexes.search,
            src_rows=src_rows,
            tgt_rows=tgt_rows,
            search=search,
            progress=progress,
            stream=indexes.stream,
            work=None if indexes.work_dir is None else StreamConfig(indexes.work_dir),
        )
    finally:
        if search is not None:
            search.close()
    return IndexCorpusMining(
        src_rows, src_inverse, tgt_rows, tgt_inverse, pairs,
        src_nprobe=src_index.nprobe(indexes.search.nprobe),
        tgt_nprobe=tgt_index.nprobe(indexes.search.nprobe),
    )  # fmt: skip


def _positions(rows: np.ndarray, count: int) -> np.ndarray:
    """``lookup[row]`` = position of ``row`` in ``rows`` (-1 elsewhere)."""
    lookup = np.full(count, -1, dtype=np.int64)
    lookup[rows] = np.arange(rows.size, dtype=np.int64)
    return lookup


def mine_indexes(
    src: OpenIndex,
    tgt: OpenIndex,
    config: MiningConfig,
    search_config: SearchConfig | None = None,
    *,
    src_rows: np.ndarray | None = None,
    tgt_rows: np.ndarray | None = None,
    search: ShardedSearch | None = None,
    progress: ProgressCallback | None = None,
    stream: Streaming = Streaming.AUTO,
    work: StreamConfig | None = None,
) -> MinedPairs:
    """Margin mining between the rows of two indexes (their source embeddings as queries).

    ``src_rows``/``tgt_rows``: the rows mined (e.g. the first row of each distinct text; None:
    all); the returned pairs index positions in them, as ``xretrieve.mining.margin.mine_rows`` indexes its
    inputs. ``config.k`` neighbours each way (clamped to the other side's size); ``search``:
    ``search_in_process`` by default, or a distributed ``ShardedSearch``.

    ``stream``: whether the margins and the selection stream through the files of ``work``
    (``xretrieve.mining.streaming``; None: a temporary directory, removed afterwards) instead
    of holding both directions' neighbour lists: ``auto`` streams when ``work`` is given or
    the lists would not fit in memory (``lists_fit_in_memory``; ``search`` must then be a
    ``StreamingSearch``). The pairs are the same either way.
    """
    check_pair(src, tgt)
    search_config = search_config or SearchConfig()
    if config.k < 1:
        raise ValueError(f"k must be at least 1, got {config.k}")
    progress = progress or no_progress
    forward, backward = direction_requests(src, tgt, config.k, search_config, src_rows, tgt_rows)
    if _streams(stream, work, (forward, backward), search):
        streaming = search if search is not None else InProcessSearch()
        if not isinstance(streaming, StreamingSearch):
            raise ArgumentError("search", "streamed mining needs a StreamingSearch")
        with contextlib.ExitStack() as stack:
            if work is None:
                work = StreamConfig(stack.enter_context(temporary_work_directory()))
            parts = mine_streamed(
                forward, backward, config.margin, config.mode, streaming, work, progress
            )
            return parts.load()
    search = search or search_in_process
    fwd_sims, fwd_ids = search_direction(forward, search, progress)
    bwd_sims, bwd_ids = search_direction(backward, search, progress)
    fwd_ids = _positions(_candidate_rows(forward), tgt.manifest.count)[fwd_ids]
    bwd_ids = _positions(_candidate_rows(backward), src.manifest.count)[bwd_ids]
    return select_pairs(fwd_sims, fwd_ids, bwd_sims, bwd_ids, config.margin, config.mode)


def _candidate_rows(request: SearchRequest) -> np.ndarray:
    """The rows of ``request.database`` that are mined: its ``allowed`` rows, or all."""
    if request.allowed is not None:
        return request.allowed
    return np.arange(request.database.manifest.count, dtype=np.int64)


def direction_requests(
    src: OpenIndex,
    tgt: OpenIndex,
    k: int,
    search_config: SearchConfig,
    src_rows: np.ndarray | None = None,
    tgt_rows: np.ndarray | None = None,
) -> tuple[SearchRequest, SearchRequest]:
    """The forward (source rows in the target index) and backward searches of mining
    ``src_rows`` against ``tgt_rows`` (None: all rows) with ``k`` neighbours (clamped to the
    other side's rows)."""
    n_src, n_tgt = src.manifest.count, tgt.manifest.count
    src_rows = np.arange(n_src, dtype=np.int64) if src_rows is None else np.asarray(src_rows)
    tgt_rows = np.arange(n_tgt, dtype=np.int64) if tgt_rows is None else np.asarray(tgt_rows)
    src_allowed = None if src_rows.size == n_src else src_rows
    tgt_allowed = None if tgt_rows.size == n_tgt else tgt_rows
    k_fwd, k_bwd = min(k, tgt_rows.size), min(k, src_rows.size)
    forward = SearchRequest(
        tgt, src.rows, src_rows, k_fwd, tgt_allowed, search_config, "index search forward"
    )
    backward = SearchRequest(
        src, tgt.rows, tgt_rows, k_bwd, src_allowed, search_config, "index search backward"
    )
    return forward, backward


def _streams(
    stream: Streaming,
    work: StreamConfig | None,
    requests: tuple[SearchRequest, SearchRequest],
    search: ShardedSearch | None,
) -> bool:
    stream = Streaming(stream)
    if stream is Streaming.OFF:
        if work is not None:
            raise ArgumentError.from_template(
                "{work} is where streamed mining works: give it without {stream}='off'"
            )
        return False
    if stream is Streaming.ON or work is not None:
        return True
    if search is not None and not isinstance(search, StreamingSearch):
        return False
    wanted = [block_finish(r).wanted for r in requests]
    return not lists_fit_in_memory(requests, wanted)
