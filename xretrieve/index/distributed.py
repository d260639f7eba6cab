"""Ray for indexes: sharded search (a pool of actors holding the database shards, query blocks
fanned out) and shard population at build time (one task per shard).

The pool has one actor per shard where the cluster's CPUs (and GPUs, one per actor when the
cluster has GPUs) allow, else as many as they allow, each holding several shards (shard ``i``
goes to actor ``i mod pool``): an actor the cluster cannot hold would be waited for forever.
Each actor loads its shards (``ShardSearcher``) at its first block. For every block of queries
the driver puts the block in Ray's object store once, asks every actor for the top k over its
shards, and merges the answers with ``merge_topk``, the same merge and tie-break as the
single-process path, so both give identical neighbours. Actors are restarted by Ray when they
die (``max_restarts``); the restarted actor reloads its shards and the interrupted block is
retried (``max_task_retries``). Actors that the cluster has not started within
``start_timeout`` seconds (its resources taken by other work) end the search with an error.

Streaming (``RaySearch.stream``, for mining that no process can hold): the driver still puts each
query block in the object store and asks every actor for its top k, but the answers go to one
actor of the pool (block ``i`` to actor ``i mod pool``), which merges them, re-scores them and
hands the block's neighbours to a sink that writes them to shared storage; the driver receives
nothing but the block's completion. ``RaySearch.run_tasks`` runs further work (scoring the
written blocks) as Ray tasks on the same cluster.

At build time each shard is a Ray task that reads the trained index and its rows from shared
storage and writes its shard file; a failed task is retried by Ray (``max_retries``), and the
shards are byte-identical to those built in one process.

Ray is optional (``xretrieve.core.ray_cluster``: joining a cluster, the install hint).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.ray_cluster import connect, get_result, gpus_per_worker
from xretrieve.core.ray_cluster import ray_module as _ray
from xretrieve.index.manifest import ShardRecord
from xretrieve.index.search import (
    BlockFinish,
    BlockSink,
    OpenIndex,
    SearchConfig,
    SearchRequest,
    ShardSearcher,
    T,
    block_finish,
    query_blocks,
)
from xretrieve.index.sources import EmbeddingRows
from xretrieve.index.topk import merge_topk

logger = logging.getLogger(__name__)

# Blocks in flight at once: the next block is searched while the driver merges the previous.
BLOCKS_IN_FLIGHT = 2


# Seconds to wait for the cluster to start the actor pool (its resources held by other work).
DEFAULT_START_TIMEOUT = 120.0


class _ShardActor:
    """Holds some shards of one index, loaded at the first search (and again after a restart,
    when Ray re-runs ``__init__``); answers with their merged top k."""

    def __init__(
        self, directory: str, shards: list[ShardRecord], nprobe: int | None, allowed
    ) -> None:
        self.directory, self.shards = Path(directory), shards
        self.nprobe, self.allowed = nprobe, allowed
        self.searchers: list[ShardSearcher] = []

    def ready(self) -> bool:
        return True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.searchers:
            self.searchers = [
                ShardSearcher(self.directory, shard, self.nprobe, self.allowed)
                for shard in self.shards
            ]
        answers = [searcher.search(queries, k) for searcher in self.searchers]
        return merge_topk(answers, k) if len(answers) > 1 else answers[0]

    def reduce(
        self,
        finish: BlockFinish,
        sink: BlockSink,
        number: int,
        start: int,
        stop: int,
        queries: np.ndarray,
        *answers: tuple[np.ndarray, np.ndarray],
    ) -> int:
        """Merge every actor's ``answers`` for block ``number`` (query positions ``start ..
        stop - 1``), finish them into the block's k neighbours and hand those to ``sink``."""
        merged = merge_topk(list(answers), finish.wanted)
        sink(number, start, stop, *finish(queries, *merged, start))
        return stop - start

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return _ray().get_runtime_context().get_node_id()


@cache
def _actor_class():
    return _ray().remote(_ShardActor)


def _run_task(task: Callable[[], T]) -> T:
    return task()


@cache
def _task_remote():
    return _ray().remote(max_retries=3)(_run_task)


# Seconds to wait for cancelled tasks to end, so that none writes after the caller cleans up.
_STOP_TIMEOUT_S = 10.0


def pool_size(shards: int, actor_cpus: float, gpus: int) -> int:
    """Actors for ``shards`` shards: one per shard as far as the cluster's CPUs (and GPUs,
    ``gpus`` per actor) allow; ``XRetrieveError`` when the cluster is too small for one."""
    total = _ray().cluster_resources()
    needs = {"CPU": actor_cpus} | ({"GPU": gpus} if gpus else {})
    for resource, amount in needs.items():
        if total.get(resource, 0) < amount:
            raise XRetrieveError(
                f"the Ray cluster has {total.get(resource, 0):g} {resource}s, and a shard "
                f"actor needs {amount:g}: give it more, or lower the actor's share"
            )
    return min(shards, *(int(total[resource] // amount) for resource, amount in needs.items()))


class RaySearch:
    """A ``ShardedSearch`` on Ray. ``address``: ``local``, ``auto`` or ``ray://host:port``;
    ``actor_cpus``: CPUs reserved per actor; ``max_restarts``: restarts per actor (and retries
    per block); ``start_timeout``: seconds to wait for the cluster to start the actors.
    ``actors`` lists the live pool during a search (for inspection)."""

    def __init__(
        self,
        address: str = "local",
        *,
        actor_cpus: float = 1.0,
        max_restarts: int = 3,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ):
        self.started = connect(address)
        self.actor_cpus = actor_cpus
        self.max_restarts = max_restarts
        self.start_timeout = start_timeout
        self.actors: list = []
        # The allowed rows in Ray's object store, held while the pool lives: a restarted actor
        # reads them again, and Ray frees an object once the driver drops its last reference.
        self._allowed_ref = None

    def close(self) -> None:
        """Shut Ray down if this object started it."""
        if self.started:
            _ray().shutdown()
            self.started = False

    def __call__(
        self, request: SearchRequest, progress: ProgressCallback
    ) -> tuple[np.ndarray, np.ndarray]:
        try:
            self._start_pool(request.database, request.allowed, request.config)
            return self._search(request, progress)
        finally:
            self._stop_pool([])

    def stream(
        self,
        request: SearchRequest,
        sink: BlockSink,
        blocks: Sequence[int],
        progress: ProgressCallback,
    ) -> None:
        """``StreamingSearch.stream`` on the pool: every actor searches each block of
        ``blocks``, one of them merges, finishes (``BlockFinish``) and sinks it; at most
        ``BLOCKS_IN_FLIGHT`` blocks per actor are under way."""
        progress(request.stage, 0, len(blocks))
        if not blocks:
            return
        ray = _ray()
        finish = block_finish(request)
        bounds = query_blocks(request.query_rows, request.config.block_rows)
        pending: list = []
        try:
            self._start_pool(request.database, request.allowed, request.config)
            in_flight = BLOCKS_IN_FLIGHT * len(self.actors)
            done = 0
            for position, number in enumerate(blocks):
                a, b = bounds[number]
                block_ref = ray.put(request.queries.rows(request.query_rows[a:b]))
                answers = [x.search.remote(block_ref, finish.wanted) for x in self.actors]
                owner = self.actors[position % len(self.actors)]
                pending.append(owner.reduce.remote(finish, sink, number, a, b, block_ref, *answers))
                while len(pending) >= in_flight or (pending and position == len(blocks) - 1):
                    get_result(pending.pop(0), "a shard actor", self.max_restarts)
                    done += 1
                    progress(request.stage, done, len(blocks))
        finally:
            self._stop_pool(pending)

    def run_tasks(
        self, tasks: Sequence[Callable[[], T]], stage: str, progress: ProgressCallback
    ) -> list[T]:
        """``[task() for task in tasks]`` as Ray tasks (one CPU each, retried up to 3 times when
        their worker dies), in the order given; on an error or an interrupt the tasks still
        running are cancelled and waited for (boundedly) before this returns."""
        ray = _ray()
        remote = _task_remote().options(num_cpus=1)
        futures = [remote.remote(task) for task in tasks]
        progress(stage, 0, len(tasks))
        results: list = []
        try:
            for done, future in enumerate(futures, start=1):
                results.append(get_result(future, "a task", 3))
                progress(stage, done, len(tasks))
        finally:
            unfinished = futures[len(results) :]
            for future in unfinished:
                with contextlib.suppress(Exception):
                    ray.cancel(future, force=True)
            _wait_ended(unfinished)
        return results

    def _stop_pool(self, pending: list) -> None:
        """Kill the actors and wait (boundedly) until the blocks they were on are reported
        failed, so that none writes after the caller cleans up."""
        ray = _ray()
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)
        _wait_ended(pending)
        self.actors, self._allowed_ref = [], None

    def _start_pool(
        self, database: OpenIndex, allowed: np.ndarray | None, config: SearchConfig
    ) -> None:
        """``self.actors``, started and placed; ``XRetrieveError`` when the cluster does not
        place them all within ``start_timeout``."""
        ray, gpus = _ray(), gpus_per_worker()
        shards = list(database.manifest.shards)
        size = pool_size(len(shards), self.actor_cpus, gpus)
        actor = _actor_class().options(
            num_cpus=self.actor_cpus,
            num_gpus=gpus,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
        )
        self._allowed_ref = ray.put(allowed)
        directory = str(database.directory)
        self.actors = [
            actor.remote(directory, shards[i::size], config.nprobe, self._allowed_ref)
            for i in range(size)
        ]
        started, _ = ray.wait(
            [x.ready.remote() for x in self.actors],
            num_returns=size,
            timeout=self.start_timeout,
        )
        if len(started) < size:
            free = ray.available_resources()
            needs = f"{self.actor_cpus:g} CPU" + (" and 1 GPU" if gpus else "")
            has = f"{free.get('CPU', 0):g} CPUs" + (
                f", {free.get('GPU', 0):g} GPUs" if gpus else ""
            )
            raise XRetrieveError(
                f"the Ray cluster started {len(started)} of {size} shard actors in "
                f"{self.start_timeout:g} s (each needs {needs}; free now: {has}): its resources "
                "are taken by other work; retry when they are free"
            )
        get_result(started, "a shard actor", self.max_restarts)

    def _search(
        self, request: SearchRequest, progress: ProgressCallback
    ) -> tuple[np.ndarray, np.ndarray]:
        ray = _ray()
        query_rows, k, stage = request.query_rows, request.k, request.stage
        blocks = query_blocks(query_rows, request.config.block_rows)
        sims = np.empty((query_rows.size, k), dtype=np.float32)
        ids = np.empty((query_rows.size, k), dtype=np.int64)
        pending: list[tuple[int, int, list]] = []
        progress(stage, 0, len(blocks))
        for done, (a, b) in enumerate(blocks, start=1):
            block_ref = ray.put(request.queries.rows(query_rows[a:b]))
            pending.append((a, b, [x.search.remote(block_ref, k) for x in self.actors]))
            if len(pending) >= BLOCKS_IN_FLIGHT or done == len(blocks):
                while pending:
                    a0, b0, futures = pending.pop(0)
                    answers = get_result(futures, "a shard actor", self.max_restarts)
                    sims[a0:b0], ids[a0:b0] = merge_topk(answers, k)
            progress(stage, done, len(blocks))
        return sims, ids


def _wait_ended(futures: list) -> None:
    """Wait up to ``_STOP_TIMEOUT_S`` for ``futures`` (killed or cancelled) to end, collecting
    their failures (Ray would print each one as an unhandled error)."""
    if not futures:
        return
    ray = _ray()
    ended: list = []
    with contextlib.suppress(Exception):
        ended, _ = ray.wait(futures, num_returns=len(futures), timeout=_STOP_TIMEOUT_S)
    for future in ended:
        with contextlib.suppress(Exception):
            ray.get(future)


def _populate_task(
    directory: str,
    trained_name: str,
    write_shard: Callable[..., ShardRecord],
    sources: list[str],
    number: int,
    start: int,
    stop: int,
    config,
) -> ShardRecord:
    from xretrieve.index.search import read_shard

    trained = read_shard(Path(directory) / trained_name)
    rows = EmbeddingRows([Path(p) for p in sources])
    return write_shard(trained, rows, number, start, stop, config, Path(directory))


@cache
def _populate_remote():
    return _ray().remote(max_retries=3)(_populate_task)


def populate_on_ray(
    address: str,
    directory: Path,
    trained_name: str,
    write_shard: Callable[..., ShardRecord],
    sources: list[Path],
    shards: list[tuple[int, int, int]],
    config,
) -> Iterator[tuple[int, ShardRecord]]:
    """Write every shard ``(number, start, stop)`` of ``shards`` into ``directory`` (which holds
    the trained index as ``trained_name``) as one Ray task each, each calling ``write_shard``
    (``index.build``'s, passed in so that this module need not import its caller); yields
    ``(number, record)`` in the order given, each as soon as it and those before it are done."""
    ray = _ray()
    started = connect(address)
    try:
        task = _populate_remote().options(num_gpus=gpus_per_worker())
        paths = [str(p) for p in sources]
        futures = [
            (number, task.remote(
                str(directory), trained_name, write_shard, paths, number, start, stop, config
            ))
            for number, start, stop in shards
        ]  # fmt: skip
        for number, future in futures:
            yield number, get_result(future)
    finally:
        if started:
            ray.shutdown()
