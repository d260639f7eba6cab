"""Searching sharded indexes both ways.

Every database shard is searched for each query's top ``k`` (ids made global), the per-shard
lists are merged into the global top ``k`` (``merge_topk``), optionally re-scored exactly, and
only then do margins see them (``xretrieve.mining.through_index.mine_indexes``: the same scoring
and selection as exact mining). Margins over per-shard neighbourhoods (a known pitfall of sharded
mining) would mine more pairs than a global run.

Re-scoring (``SearchConfig.rescore``, on by default) asks the index for ``candidate_factor`` x k
candidates, replaces their PQ-approximated similarities by exact dot products of the
L2-normalised embeddings (read from the memory-mapped source files the index manifest records)
and keeps the k best, as FAISS's ``IndexRefine`` does with its ``k_factor``. Margins are ratios
near 1.05, so PQ's similarity error would otherwise move pairs across the threshold, and PQ's
own top k misses true neighbours that a wider candidate list still holds.

Mining runs over distinct texts as exact mining does: rows that repeat an earlier text are
excluded from the search with a FAISS ``IDSelector`` and not used as queries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.index.manifest import MANIFEST, IndexManifest, ShardRecord, read_index_manifest
from xretrieve.index.sources import EmbeddingRows
from xretrieve.index.topk import merge_topk, sort_topk

logger = logging.getLogger(__name__)

# stopes' mining defaults: k = 16 neighbours for the margin, nprobe = 128 inverted lists.
DEFAULT_INDEX_K = 16
# Default inverted lists visited (``auto_nprobe``): a quarter of the lists, at least stopes'
# 128 and at most 256. On 1024 lists 256 was needed to keep mining F1 within 1 point of exact
# mining; 128 lost 1.3 points (benchmarks/RESULTS.md). The cap keeps the scan at twice
# stopes' cost on large indexes, where it dominates the search time.
MIN_AUTO_NPROBE = 128
MAX_AUTO_NPROBE = 256
# Candidate rows gathered per re-scoring step (256 MiB of float32 at d=1024).
RESCORE_ROWS = 65_536
# Candidates re-scored per neighbour kept (FAISS IndexRefine's k_factor).
DEFAULT_CANDIDATE_FACTOR = 4


@dataclass(frozen=True)
class SearchConfig:
    """``nprobe``: inverted lists visited per query (clamped to the lists there are; ignored by
    indexes without lists; None: ``auto_nprobe`` of each index); ``block_rows``: queries per search call; ``rescore``: exact
    similarities for the merged candidates; ``candidate_factor``: with ``rescore``, the index
    returns this many times k candidates, of which the k best by exact similarity are kept
    (see module doc; 1 re-orders the index's own top k)."""

    nprobe: int | None = None
    block_rows: int = 16_384
    rescore: bool = True
    candidate_factor: int = DEFAULT_CANDIDATE_FACTOR

    def __post_init__(self) -> None:
        if self.candidate_factor < 1:
            raise ValueError(f"candidate_factor must be at least 1, got {self.candidate_factor}")


@dataclass(frozen=True)
class OpenIndex:
    """An index directory whose manifest was checked against its files; ``rows`` reads the
    embeddings it was built from (the queries of the other direction, and re-scoring);
    ``lists``: the inverted lists of its shards (0: none)."""

    directory: Path
    manifest: IndexManifest
    rows: EmbeddingRows
    lists: int = 0

    def nprobe(self, requested: int | None) -> int | None:
        """The lists a search with ``--nprobe requested`` (None: auto) visits per query; None
        for an index without inverted lists."""
        return probes(requested, self.lists) if self.lists else None


def open_index(directory: Path, *, verify_shards: bool = True) -> OpenIndex:
    """Read and check ``directory/manifest.json`` (see ``read_index_manifest``)."""
    directory = Path(directory)
    manifest = read_index_manifest(directory, verify_shards=verify_shards)
    rows = EmbeddingRows([Path(s.path) for s in manifest.sources])
    lists = manifest.lists
    if lists is None:  # a manifest written before it was recorded: the first shard says
        lists = _shard_lists(directory / manifest.shards[0].file)
    return OpenIndex(directory, manifest, rows, lists)


def _shard_lists(path: Path) -> int:
    """The inverted lists of a shard file, read without loading its vectors (memory-mapped)."""
    import faiss

    from xretrieve.index.factory import inverted_lists

    try:
        return inverted_lists(
            faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        )
    except RuntimeError:
        return inverted_lists(read_shard(path))


def read_shard(path: Path):
    """A FAISS index file; ``InputError`` when FAISS cannot read it."""
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as error:
        text = str(error).strip().splitlines()
        raise InputError(
            path, f"FAISS cannot read this index ({text[-1] if text else ''})"
        ) from None


def auto_nprobe(lists: int) -> int:
    """The default lists visited per query for an IVF of ``lists`` inverted lists."""
    return min(lists, max(MIN_AUTO_NPROBE, min(MAX_AUTO_NPROBE, lists // 4)))


def probes(nprobe: int | None, lists: int) -> int:
    """Lists visited per query: ``nprobe`` (None: ``auto_nprobe``), at most ``lists``."""
    return min(lists, auto_nprobe(lists) if nprobe is None else nprobe)


class ShardSearcher:
    """One shard's FAISS index, answering with global row ids.

    ``allowed``: the global rows that may be returned (None: all); the others are filtered out
    by an ``IDSelectorBitmap`` inside FAISS, so each answer is the top k among allowed rows.
    When FAISS sees a GPU (``faiss.get_num_gpus() > 0``) and no rows are filtered, the shard is
    searched by a GPU copy (fp16 lookup tables, as stopes); FAISS's GPU indexes take no
    ``IDSelector``, so a filtered shard stays on the CPU.
    """

    def __init__(
        self, directory: Path, shard: ShardRecord, nprobe: int | None, allowed: np.ndarray | None
    ) -> None:
        import faiss

        self.shard = shard
        self.index = read_shard(Path(directory) / shard.file)
        if self.index.ntotal != shard.rows:
            raise InputError(
                Path(directory) / shard.file,
                f"holds {self.index.ntotal} vectors, the manifest says {shard.rows}",
            )
        self._keep: list = []  # FAISS objects referenced by pointer must outlive the search
        selector = None
        self.allowed_rows = shard.rows
        if allowed is not None:
            local = allowed[(allowed >= shard.offset) & (allowed < shard.offset + shard.rows)]
            mask = np.zeros(shard.rows, dtype=bool)
            mask[local - shard.offset] = True
            self.allowed_rows = int(mask.sum())
            bitmap = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(shard.rows, faiss.swig_ptr(bitmap))
            self._keep += [bitmap, selector]
        ivf = faiss.try_extract_index_ivf(self.index)
        # Lists visited per query; None for an index without inverted lists.
        self.nprobe = None if ivf is None else probes(nprobe, int(ivf.nlist))
        self.params = self._parameters(selector)
        self.gpu_index = None
        if selector is None and faiss.get_num_gpus() > 0:
            self.gpu_index = self._to_gpu()

    def _to_gpu(self):
        import faiss

        try:
            self._keep.append(faiss.StandardGpuResources())
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True
            gpu_index = faiss.index_cpu_to_gpu(self._keep[-1], 0, self.index, options)
            if self.nprobe is not None:
                faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", self.nprobe)
            return gpu_index
        except RuntimeError as error:  # an index type without a GPU version
            logger.warning("searching on the CPU: %s", str(error).strip().splitlines()[-1])
            return None

    def _parameters(self, selector):
        import faiss

        inner = self.index
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        if self.nprobe is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.nprobe
        elif selector is None:
            return None  # nothing to set; some indexes (IndexPQ) refuse the generic parameters
        elif isinstance(inner, faiss.IndexPQ):
            params = faiss.SearchParametersPQ()
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        self._keep.append(params)
        if isinstance(self.index, faiss.IndexPreTransform):
            outer = faiss.SearchParametersPreTransform()
            outer.index_params = params
            self._keep.append(outer)
            return outer
        return params

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``queries`` (b, d) float32 unit rows -> ``(sims, ids)`` (b, min(k, rows)), global ids,
        -1 where fewer rows qualified."""
        k = max(1, min(k, self.shard.rows))
        queries = np.ascontiguousarray(queries)
        if self.gpu_index is not None:
            sims, ids = self.gpu_index.search(queries, k)
        else:
            sims, ids = self.index.search(queries, k, params=self.params)
        return sims, np.where(ids >= 0, ids + self.shard.offset, -1)


@dataclass(frozen=True, eq=False)
class SearchRequest:
    """One direction of a search: the top ``k`` in ``database`` (among its ``allowed`` global
    rows, None: all) of each query row ``query_rows`` (q,) of ``queries``, searched as ``config``
    says; ``stage`` names it in progress reports and errors."""

    database: OpenIndex
    queries: EmbeddingRows
    query_rows: np.ndarray
    k: int
    allowed: np.ndarray | None = None
    config: SearchConfig = SearchConfig()
    stage: str = "index search"


class ShardedSearch(Protocol):
    """The top ``request.k`` over all shards of ``request.database`` for each query:
    ``(sims, ids)`` (q, k) merged globally, best first, ties by id."""

    def __call__(
        self, request: SearchRequest, progress: ProgressCallback
    ) -> tuple[np.ndarray, np.ndarray]: ...


def query_blocks(query_rows: np.ndarray, block_rows: int) -> list[tuple[int, int]]:
    return [
        (a, min(a + block_rows, query_rows.size)) for a in range(0, query_rows.size, block_rows)
    ]


def search_in_process(
    request: SearchRequest, progress: ProgressCallback
) -> tuple[np.ndarray, np.ndarray]:
    """``ShardedSearch`` one shard at a time (memory: one shard plus the running top k)."""
    query_rows, k, stage = request.query_rows, request.k, request.stage
    blocks = query_blocks(query_rows, request.config.block_rows)
    shards = request.database.manifest.shards
    running: tuple[np.ndarray, np.ndarray] | None = None
    progress(stage, 0, len(shards) * len(blocks))
    for number, shard in enumerate(shards):
        searcher = ShardSearcher(
            request.database.directory, shard, request.config.nprobe, request.allowed
        )
        parts = []
        for done, (a, b) in enumerate(blocks, start=1):
            parts.append(searcher.search(request.queries.rows(query_rows[a:b]), k))
            progress(stage, number * len(blocks) + done, len(shards) * len(blocks))
        found = (np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts]))
        running = sort_topk(*found, k) if running is None else merge_topk([running, found], k)
        del searcher
    assert running is not None  # a manifest has at least one shard
    return running


def rescore(
    query_vectors: np.ndarray, database: EmbeddingRows, ids: np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities ``query . database[id]`` (float32) of each query (b, d) with its
    candidates ``ids`` (b, c), re-sorted best first (ties by id) and cut to the ``k`` best
    (default: all c). Missing candidates (id -1) sort last."""
    missing = ids < 0
    sims = np.einsum("bd,bkd->bk", query_vectors, database.rows(np.where(missing, 0, ids)))
    sims[missing] = -np.inf
    return sort_topk(sims, ids, ids.shape[1] if k is None else k)


def _check_found(ids: np.ndarray, k: int, stage: str, nprobe: int | None, rows: str = "") -> None:
    """``XRetrieveError`` when some query (a row of ``ids``) has fewer than ``k`` neighbours."""
    short = int((ids[:, :k] < 0).any(axis=1).sum())
    if short:
        raise XRetrieveError(
            f"{stage}: the index found fewer than k={k} neighbours for {short} of "
            f"{ids.shape[0]} queries{rows} (nprobe={nprobe}); raise {{nprobe}} or lower {{k}}",
            arguments=("nprobe", "k"),
        )


def _rescored(
    vectors: Callable[[int, int], np.ndarray], database: EmbeddingRows, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``rescore`` of the queries ``vectors(a, b)`` (the rows ``a:b`` of ``ids``) in steps of
    at most ``RESCORE_ROWS`` gathered candidate rows: (b, candidates, d) float32 per step."""
    kept_sims = np.empty((ids.shape[0], k), dtype=np.float32)
    kept_ids = np.empty((ids.shape[0], k), dtype=np.int64)
    for a, b in query_blocks(np.arange(ids.shape[0]), max(1, RESCORE_ROWS // ids.shape[1])):
        kept_sims[a:b], kept_ids[a:b] = rescore(vectors(a, b), database, ids[a:b], k)
    return kept_sims, kept_ids


def _wanted(request: SearchRequest) -> int:
    """The candidates asked of the index per query: ``config.candidate_factor`` x k with
    re-scoring (at most the searchable rows), else k."""
    database, config, k = request.database, request.config, request.k
    searchable = database.manifest.count if request.allowed is None else request.allowed.size
    return min(k * config.candidate_factor, searchable) if config.rescore else k


def search_direction(
    request: SearchRequest,
    search: ShardedSearch = search_in_process,
    progress: ProgressCallback = no_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Global top ``request.k`` of each query among the database's allowed rows, re-scored when
    asked (from ``config.candidate_factor`` x k candidates, which ``search`` finds);
    ``XRetrieveError`` when the index found fewer than ``k`` neighbours for some query."""
    database, config, k = request.database, request.config, request.k
    sims, ids = search(replace(request, k=_wanted(request)), progress)
    _check_found(ids, k, request.stage, database.nprobe(config.nprobe))
    if not config.rescore:
        return sims, ids

    def vectors(a: int, b: int) -> np.ndarray:
        return request.queries.rows(request.query_rows[a:b])

    return _rescored(vectors, database.rows, ids, k)


@lru_cache(maxsize=4)
def _database_rows(files: tuple[str, ...]) -> EmbeddingRows:
    return EmbeddingRows([Path(f) for f in files])


@dataclass(frozen=True)
class BlockFinish:
    """What turns one query block's merged candidates into its ``k`` neighbours exactly as
    ``search_direction`` does (the check that k were found, re-scoring), wherever the block was
    searched: picklable, it names the database's embedding files (re-scoring reads them) and
    opens them where it runs. ``wanted``: the candidates asked of the index per query."""

    database_files: tuple[str, ...]
    k: int
    wanted: int
    rescore: bool
    stage: str
    nprobe: int | None

    def __call__(
        self, queries: np.ndarray, sims: np.ndarray, ids: np.ndarray, start: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``queries`` (b, d) unit rows (query positions ``start ..``) with their merged
        ``(sims, ids)`` (b, wanted) -> their k neighbours (b, k) float32, int64."""
        rows = f" (block of query rows {start}..{start + ids.shape[0] - 1})"
        _check_found(ids, self.k, self.stage, self.nprobe, rows)
        if not self.rescore:
            return sims, ids
        database = _database_rows(self.database_files)
        return _rescored(lambda a, b: queries[a:b], database, ids, self.k)


def block_finish(request: SearchRequest) -> BlockFinish:
    """The ``BlockFinish`` of ``request`` (its ``k`` the neighbours kept)."""
    database, config = request.database, request.config
    return BlockFinish(
        tuple(str(path) for path in database.rows.paths),
        request.k,
        _wanted(request),
        config.rescore,
        request.stage,
        database.nprobe(config.nprobe),
    )


class BlockSink(Protocol):
    """Receives the ``k`` neighbours ``(sims, ids)`` (b, k) of the query positions
    ``start .. stop - 1`` (block ``number``) where they were found (picklable, for Ray)."""

    def __call__(
        self, number: int, start: int, stop: int, sims: np.ndarray, ids: np.ndarray
    ) -> None: ...


T = TypeVar("T")


@runtime_checkable
class StreamingSearch(ShardedSearch, Protocol):
    """A ``ShardedSearch`` that can also hand each query block's neighbours to a ``BlockSink``
    where the block was searched (so that no process gathers all of them), and run tasks where
    it searches (the same processes or cluster)."""

    def stream(
        self,
        request: SearchRequest,
        sink: BlockSink,
        blocks: Sequence[int],
        progress: ProgressCallback,
    ) -> None:
        """For each block number in ``blocks`` (of ``query_blocks(request.query_rows,
        request.config.block_rows)``), its ``request.k`` neighbours as ``search_direction``
        finds them, to ``sink``; progress ``(request.stage, done, len(blocks))``."""
        ...

    def run_tasks(
        self, tasks: Sequence[Callable[[], T]], stage: str, progress: ProgressCallback
    ) -> list[T]:
        """``[task() for task in tasks]``, each possibly in another process (picklable)."""
        ...


class InProcessSearch:
    """``StreamingSearch`` in this process: ``search_in_process``; ``stream`` holds every shard
    of the database open (its size, not the queries') and searches one block at a time."""

    def __call__(
        self, request: SearchRequest, progress: ProgressCallback
    ) -> tuple[np.ndarray, np.ndarray]:
        return search_in_process(request, progress)

    def stream(
        self,
        request: SearchRequest,
        sink: BlockSink,
        blocks: Sequence[int],
        progress: ProgressCallback,
    ) -> None:
        finish = block_finish(request)
        bounds = query_blocks(request.query_rows, request.config.block_rows)
        progress(request.stage, 0, len(blocks))
        if not blocks:
            return
        searchers = [
            ShardSearcher(request.database.directory, shard, request.config.nprobe, request.allowed)
            for shard in request.database.manifest.shards
        ]
        for done, number in enumerate(blocks, start=1):
            a, b = bounds[number]
            queries = request.queries.rows(request.query_rows[a:b])
            merged = merge_topk(
                [s.search(queries, finish.wanted) for s in searchers], finish.wanted
            )
            sink(number, a, b, *finish(queries, *merged, a))
            progress(request.stage, done, len(blocks))

    def run_tasks(
        self, tasks: Sequence[Callable[[], T]], stage: str, progress: ProgressCallback
    ) -> list[T]:
        results = []
        progress(stage, 0, len(tasks))
        for done, task in enumerate(tasks, start=1):
            results.append(task())
            progress(stage, done, len(tasks))
        return results


def check_pair(src: OpenIndex, tgt: OpenIndex) -> None:
    """``InputError`` when the two indexes cannot be mined against each other."""
    if src.manifest.dimension != tgt.manifest.dimension:
        raise InputError(
            tgt.directory / MANIFEST,
            f"index dimension {tgt.manifest.dimension} differs from "
            f"{src.directory}'s {src.manifest.dimension}",
        )
