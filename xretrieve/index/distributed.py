"""Ray for indexes: sharded search (one actor per database shard, query blocks fanned out) and
shard population at build time (one task per shard).

Each actor loads one shard (``ShardSearcher``; on a GPU when the cluster has GPUs). For every
block of queries the driver puts the block in Ray's object store once, asks every actor for its
top k, and merges the answers with ``merge_topk``, the same merge and tie-break as the
single-process path, so both give identical neighbours. Actors are restarted by Ray when they
die (``max_restarts``); the restarted actor reloads its shard and the interrupted block is
retried (``max_task_retries``).

At build time each shard is a Ray task that reads the trained index and its rows from shared
storage and writes its shard file; a failed task is retried by Ray (``max_retries``), and the
shards are byte-identical to those built in one process.

Ray is optional (``xretrieve.ray_cluster``: joining a cluster, the install hint).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np

from xretrieve.index.manifest import ShardRecord
from xretrieve.index.search import OpenIndex, SearchConfig, ShardSearcher, query_blocks
from xretrieve.index.sources import EmbeddingRows
from xretrieve.index.topk import merge_topk
from xretrieve.progress import ProgressCallback
from xretrieve.ray_cluster import connect, get_result, gpus_per_worker
from xretrieve.ray_cluster import ray_module as _ray

logger = logging.getLogger(__name__)

# Blocks in flight at once: the next block is searched while the driver merges the previous.
BLOCKS_IN_FLIGHT = 2


class _ShardActor:
    """Holds one shard; Ray re-runs ``__init__`` (reloading the shard) on restart."""

    def __init__(self, directory: str, shard, nprobe: int, allowed: np.ndarray | None) -> None:
        self.searcher = ShardSearcher(Path(directory), shard, nprobe, allowed)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.search(queries, k)

    def pid(self) -> int:
        return os.getpid()


@cache
def _actor_class():
    return _ray().remote(_ShardActor)


class RaySearch:
    """A ``ShardedSearch`` on Ray. ``address``: ``local``, ``auto`` or ``ray://host:port``;
    ``actor_cpus``: CPUs reserved per shard actor; ``max_restarts``: restarts per actor (and
    retries per block). ``actors`` lists the live pool during a search (for inspection)."""

    def __init__(self, address: str = "local", *, actor_cpus: float = 1.0, max_restarts: int = 3):
        self.started = connect(address)
        self.actor_cpus = actor_cpus
        self.max_restarts = max_restarts
        self.actors: list = []

    def close(self) -> None:
        """Shut Ray down if this object started it."""
        if self.started:
            _ray().shutdown()
            self.started = False

    def __call__(
        self,
        database: OpenIndex,
        queries: EmbeddingRows,
        query_rows: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        config: SearchConfig,
        progress: ProgressCallback,
        stage: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        ray = _ray()
        actor = _actor_class().options(
            num_cpus=self.actor_cpus,
            num_gpus=gpus_per_worker(),
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
        )
        allowed_ref = ray.put(allowed)
        directory = str(database.directory)
        self.actors = [
            actor.remote(directory, shard, config.nprobe, allowed_ref)
            for shard in database.manifest.shards
        ]
        blocks = query_blocks(query_rows, config.block_rows)
        sims = np.empty((query_rows.size, k), dtype=np.float32)
        ids = np.empty((query_rows.size, k), dtype=np.int64)
        try:
            pending: list[tuple[int, int, list]] = []
            progress(stage, 0, len(blocks))
            for done, (a, b) in enumerate(blocks, start=1):
                block_ref = ray.put(queries.rows(query_rows[a:b]))
                pending.append((a, b, [x.search.remote(block_ref, k) for x in self.actors]))
                if len(pending) >= BLOCKS_IN_FLIGHT or done == len(blocks):
                    while pending:
                        a0, b0, futures = pending.pop(0)
                        answers = get_result(futures, "a shard actor", self.max_restarts)
                        sims[a0:b0], ids[a0:b0] = merge_topk(answers, k)
                progress(stage, done, len(blocks))
        finally:
            for x in self.actors:
                ray.kill(x)
            self.actors = []
        return sims, ids


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
