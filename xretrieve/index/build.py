"""Building a sharded approximate FAISS index from memory-mapped embedding files.

As stopes' mining pipeline (``train_faiss_index``, ``populate_faiss_index``): one index is
trained on a seeded random sample, then each database shard is a copy of the trained, empty
index populated with its own rows, block by block (memory: the sample, one shard and one block).
Rows are L2-normalised and the metric is inner product, i.e. cosine similarity, as exact mining.

On a machine where FAISS sees a GPU (``faiss.get_num_gpus() > 0``), k-means of the coarse
quantizer runs on the GPU and shards are populated by a GPU copy of the index (fp16 lookup
tables, as stopes); the files written are CPU indexes either way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xretrieve.errors import InputError, XRetrieveError
from xretrieve.formats.embedding_shards import expand_shard_directories
from xretrieve.index.manifest import (
    FORMAT_VERSION,
    IndexManifest,
    ShardRecord,
    SourceRecord,
    write_manifest,
)
from xretrieve.index.partial import PartialBuild, open_partial, shard_name
from xretrieve.index.sources import EmbeddingRows
from xretrieve.integrity import file_sha256
from xretrieve.knn import check_device
from xretrieve.progress import ProgressCallback, no_progress

logger = logging.getLogger(__name__)

# stopes' mining_utils.determine_faiss_index_type: IVF lists by sentence count; Flat at or below
# 10k sentences (IVF k-means fails or is pointless with so few points).
FLAT_MAX_ROWS = 10_000
IVF_LISTS_BY_ROWS = (
    (500_000_000, 262_144),
    (100_000_000, 131_072),
    (10_000_000, 65_536),
    (4_000_000, 32_768),
    (700_000, 16_384),
    (250_000, 8_192),
    (160_000, 4_096),
    (80_000, 2_048),
    (FLAT_MAX_ROWS, 1_024),
)
STOPES_PQ = 64
# FAISS warns below 39 training points per centroid; the default sample gives ~100 per list
# (FAISS's k-means subsamples above 256 per centroid anyway), at least 2^16 rows.
TRAIN_POINTS_PER_LIST = 100
MIN_DEFAULT_TRAIN = 1 << 16
FAISS_ADVISED_PER_CENTROID = 39


@dataclass(frozen=True)
class BuildConfig:
    """``factory``: a FAISS ``index_factory`` string, or None for ``default_factory``;
    ``train_size``: rows in the training sample (None: ``default_train_size``), drawn with
    ``seed``; ``shard_rows``: database rows per shard file; ``block_rows``: rows converted and
    added per step; ``device``: auto (GPU when FAISS sees one), cpu or cuda; ``ray``: populate
    the shards as Ray tasks (``local``, ``auto`` or an address; the output directory must be on
    storage every node sees), None in this process; ``resume``: continue the build an earlier
    run of the same settings left unfinished (``xretrieve.index.partial``)."""

    factory: str | None = None
    train_size: int | None = None
    seed: int = 0
    shard_rows: int = 1_000_000
    block_rows: int = 65_536
    device: str = "auto"
    ray: str | None = None
    resume: bool = True


def pq_subquantizers(dim: int) -> int:
    """stopes' 64 sub-quantizers when 64 divides ``dim``, else the largest divisor of ``dim``
    not above 64 (PQ and OPQ need ``dim % M == 0``)."""
    return max(m for m in range(1, min(dim, STOPES_PQ) + 1) if dim % m == 0)


def default_factory(count: int, dim: int) -> tuple[str, str]:
    """``(factory, note)`` for ``count`` rows of dimension ``dim``, as stopes chooses:
    ``Flat`` up to 10k rows, else ``OPQ64,IVF{N},PQ64`` with N from the row count. ``note``
    explains an adapted sub-quantizer count (empty when stopes' 64 fits)."""
    if count <= FLAT_MAX_ROWS:
        return "Flat", ""
    lists = next(n for rows, n in IVF_LISTS_BY_ROWS if count > rows)
    m = pq_subquantizers(dim)
    note = ""
    if m != STOPES_PQ:
        note = (
            f"PQ{m} instead of stopes' PQ64: 64 does not divide dimension {dim}; "
            f"{m} is its largest divisor up to 64"
        )
    return f"OPQ{m},IVF{lists},PQ{m}", note


def default_train_size(count: int, lists: int) -> int:
    """Training sample: ~100 rows per inverted list, at least 2^16, at most the corpus."""
    return min(count, max(TRAIN_POINTS_PER_LIST * lists, MIN_DEFAULT_TRAIN))


def _faiss():
    try:
        import faiss
    except ImportError:
        raise XRetrieveError("approximate indexes need FAISS: pip install faiss-cpu") from None
    return faiss


def _use_gpu(device: str) -> bool:
    device = check_device(device)
    faiss = _faiss()
    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    if device == "cpu":
        return False
    if device.startswith("cuda") and gpus == 0:
        raise XRetrieveError(f"device {device!r} requested, but FAISS sees no GPU")
    return gpus > 0


def new_index(factory: str, dim: int):
    """An empty inner-product FAISS index from ``factory``; ``XRetrieveError`` when FAISS
    rejects the string (e.g. PQ64 on a dimension 64 does not divide)."""
    faiss = _faiss()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise XRetrieveError(
            f"FAISS cannot build index {factory!r} for dimension {dim}: {first}"
        ) from None


def _lists(index) -> int:
    ivf = _faiss().try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 0


def min_training_points(index) -> int:
    """The fewest training rows FAISS accepts for ``index``: one per IVF list and one per PQ
    centroid (256 for 8-bit codes); 0 for indexes without training."""
    faiss = _faiss()
    if index.is_trained:
        return 0
    needed = _lists(index)
    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf) if ivf is not None else index
    pq = getattr(inner, "pq", None)
    if pq is not None:
        needed = max(needed, int(pq.ksub))
    return max(needed, 1)


def _train(index, rows: EmbeddingRows, train_size: int, seed: int, gpu: bool) -> None:
    faiss = _faiss()
    rng = np.random.default_rng(seed)
    sample_ids = np.sort(rng.choice(rows.count, size=train_size, replace=False))
    sample = rows.rows(sample_ids)
    ivf = faiss.try_extract_index_ivf(index)
    if gpu and ivf is not None:
        # The costly part of training is the coarse k-means; FAISS lets a GPU index assign.
        resources = faiss.StandardGpuResources()
        ivf.clustering_index = faiss.GpuIndexFlatIP(resources, ivf.d)
    logger.info("training %s on %d rows (seed %d)", type(index).__name__, train_size, seed)
    index.train(sample)
    if ivf is not None:
        ivf.clustering_index = None


def _populate(trained, rows: EmbeddingRows, start: int, stop: int, block_rows: int, gpu: bool):
    """A copy of ``trained`` holding global rows ``[start, stop)`` under ids ``0..``."""
    faiss = _faiss()
    shard = faiss.clone_index(trained)
    target, resources = shard, None
    if gpu:
        try:
            resources = faiss.StandardGpuResources()
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True
            target = faiss.index_cpu_to_gpu(resources, 0, shard, options)
        except RuntimeError as error:  # an index type without a GPU version
            logger.warning("adding on the CPU: %s", str(error).strip().splitlines()[-1])
            target = shard
    for a in range(start, stop, block_rows):
        target.add(rows.block(a, min(a + block_rows, stop)))
    if target is not shard:
        shard = faiss.index_gpu_to_cpu(target)
    return shard


def write_shard(
    trained, rows: EmbeddingRows, number: int, start: int, stop: int, config: BuildConfig, out: Path
) -> ShardRecord:
    """Populate a copy of ``trained`` with global rows ``[start, stop)`` and write it to
    ``out/shard-{number:05d}.faiss``."""
    faiss = _faiss()
    shard = _populate(trained, rows, start, stop, config.block_rows, _use_gpu(config.device))
    name = shard_name(number)
    faiss.write_index(shard, str(out / name))
    del shard
    return ShardRecord(
        name, start, stop - start, (out / name).stat().st_size, file_sha256(out / name)
    )


def build_index(
    sources: list[Path],
    out_dir: Path,
    config: BuildConfig = BuildConfig(),
    *,
    progress: ProgressCallback | None = None,
) -> IndexManifest:
    """Build an index over the rows of ``sources`` (``.npy`` float16/32, one dimension, or a
    finished ``embed --ray`` directory, read as its shard files in order) into ``out_dir``. It
    appears complete or not at all; an interrupted build resumes (see
    ``xretrieve.index.partial``; ``config.resume``).

    Raises ``InputError`` for unreadable or mismatched sources and ``XRetrieveError`` for a
    factory FAISS rejects or a training sample smaller than the index needs.
    """
    faiss = _faiss()
    progress = progress or no_progress
    if config.shard_rows < 1 or config.block_rows < 1:
        raise XRetrieveError("shard_rows and block_rows must be positive")
    rows = EmbeddingRows(expand_shard_directories(sources))
    factory, note = (
        (config.factory, "") if config.factory else default_factory(rows.count, rows.dim)
    )
    if note:
        logger.warning("%s", note)
    index = new_index(factory, rows.dim)
    gpu = _use_gpu(config.device)
    train_size = _check_train_size(index, factory, rows.count, config.train_size)
    records = _hashed_sources(rows, progress)
    settings = {
        "format_version": FORMAT_VERSION,
        "faiss_version": faiss.__version__,
        "factory": factory,
        "train_size": train_size,
        "seed": config.seed,
        "shard_rows": config.shard_rows,
        "gpu": gpu,
        "sources": [record.__dict__ for record in records],
    }
    partial = open_partial(out_dir, settings, config.resume)
    index = _trained(index, rows, train_size, config.seed, gpu, partial, progress)
    ranges = [
        (start, min(start + config.shard_rows, rows.count))
        for start in range(0, rows.count, config.shard_rows)
    ]
    shards = _shards(index, rows, ranges, config, partial, progress)
    manifest = IndexManifest(
        format_version=FORMAT_VERSION,
        factory=factory,
        factory_note=note,
        dimension=rows.dim,
        count=rows.count,
        metric="inner_product",
        normalized=True,
        train_size=train_size,
        seed=config.seed,
        faiss_version=faiss.__version__,
        sources=tuple(records),
        shards=tuple(shards),
    )
    write_manifest(partial.directory, manifest)
    partial.finish(Path(out_dir))
    return manifest


def _hashed_sources(rows: EmbeddingRows, progress: ProgressCallback) -> list[SourceRecord]:
    records = []
    progress("hash sources", 0, len(rows.files))
    for f in rows.files:
        path = f.path.resolve()
        records.append(
            SourceRecord(str(path), f.rows, f.dtype, path.stat().st_size, file_sha256(path))
        )
        progress("hash sources", len(records), len(rows.files))
    return records


def _trained(
    index,
    rows: EmbeddingRows,
    train_size: int,
    seed: int,
    gpu: bool,
    partial: PartialBuild,
    progress: ProgressCallback,
):
    """``index`` trained (or the trained index an interrupted build saved in ``partial``)."""
    faiss = _faiss()
    if partial.has_trained():
        return faiss.read_index(str(partial.trained_path))
    if train_size:
        progress("train index", 0, 1)
        _train(index, rows, train_size, seed, gpu)
        progress("train index", 1, 1)
    staging = partial.trained_path.with_name(partial.trained_path.name + ".tmp")
    faiss.write_index(index, str(staging))
    os.replace(staging, partial.trained_path)
    return index


def _shards(
    trained,
    rows: EmbeddingRows,
    ranges: list[tuple[int, int]],
    config: BuildConfig,
    partial: PartialBuild,
    progress: ProgressCallback,
) -> list[ShardRecord]:
    """Every shard of ``ranges``, in order: those ``partial`` holds kept, the others written."""
    done = {number: partial.finished_shard(number) for number in range(len(ranges))}
    todo = [(number, *ranges[number]) for number, record in done.items() if record is None]
    added = sum(record.rows for record in done.values() if record is not None)
    progress("add to index", added, rows.count)
    if config.ray is not None and todo:
        from xretrieve.index.distributed import populate_on_ray

        written = populate_on_ray(
            config.ray, partial.directory, partial.trained_path.name, write_shard, rows.paths,
            todo, config,
        )  # fmt: skip
    else:
        written = (
            (number, write_shard(trained, rows, number, start, stop, config, partial.directory))
            for number, start, stop in todo
        )
    for number, record in written:
        partial.record_shard(number, record)
        done[number] = record
        added += record.rows
        progress("add to index", added, rows.count)
    return [done[number] for number in range(len(ranges))]  # type: ignore[misc]


def _check_train_size(index, factory: str, count: int, train_size: int | None) -> int:
    """The sample size to train with (0: no training), or ``XRetrieveError`` when too small."""
    needed = min_training_points(index)
    if not needed:
        return 0
    lists = _lists(index)
    size = train_size if train_size is not None else default_train_size(count, max(lists, 1))
    if size > count:
        raise XRetrieveError(f"--train-size {size} exceeds the {count} rows of the sources")
    if size < needed:
        raise InputError(
            None,
            f"too few training points for {factory}: {size} "
            f"({'--train-size' if train_size is not None else 'all rows'}), at least {needed} "
            f"needed (FAISS advises {FAISS_ADVISED_PER_CENTROID * max(lists, 1)}); "
            "use a smaller IVF or more rows",
        )
    if lists and size < FAISS_ADVISED_PER_CENTROID * lists:
        logger.warning(
            "training %s on %d rows: FAISS advises at least %d",
            factory,
            size,
            FAISS_ADVISED_PER_CENTROID * lists,
        )
    return size
