"""Building a sharded approximate FAISS index from memory-mapped embedding files.

As stopes' mining pipeline (``train_faiss_index``, ``populate_faiss_index``): one index is
trained on a seeded random sample, then each database shard is a copy of the trained, empty
index populated with its own rows, block by block (memory: the sample, one shard and one block).
Rows are L2-normalised and the metric is inner product, i.e. cosine similarity, as exact mining.

On a machine where FAISS sees a GPU (``faiss.get_num_gpus() > 0``), k-means of the coarse
quantizer runs on the GPU and shards are populated by a GPU copy of the index (fp16 lookup
tables, as stopes); the files written are CPU indexes either way.

Everything that can be refused is refused before anything is written: the output (``--out``
and its work directory, by the shared output guard), the sources (readable, finite, an
``embed --ray`` directory checked against its manifest), the factory, the training size, the
Ray cluster. Training runs in a child process (parts of FAISS's training hold the calling thread
for minutes without a look at signals, which Python handles only between calls), so Ctrl-C and
SIGTERM stop a build within seconds, keeping the work directory for a resumed run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError
from xretrieve.core.integrity import file_sha256
from xretrieve.core.outputs import check_output_path
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Device, parse_device
from xretrieve.formats.embedding_shards import SourceFile, expand_shard_directories
from xretrieve.index.factory import faiss_module, faiss_reason, inverted_lists, new_index
from xretrieve.index.manifest import (
    FORMAT_VERSION,
    INDEX_OUTPUT,
    IndexManifest,
    ShardRecord,
    SourceRecord,
    write_index_manifest,
)
from xretrieve.index.partial import (
    PARTIAL_OUTPUT,
    PartialBuild,
    build_lock,
    index_shard_name,
    open_partial,
    work_directory,
)
from xretrieve.index.sources import EmbeddingRows
from xretrieve.index.training import (
    FAISS_ADVISED_PER_CENTROID,
    EstimateCallback,
    TrainingEstimate,
    TrainingPhase,
    default_factory,
    default_train_size,
    estimate_training,
    measure_rates,
    pq_subquantizers,
    train_in_phases,
)

logger = logging.getLogger(__name__)

__all__ = ["BuildConfig", "build_index", "default_factory", "pq_subquantizers"]

# Seconds the training process is given to end after SIGTERM before it is killed.
TRAINING_STOP_WAIT = 5.0


@dataclass(frozen=True)
class BuildConfig:
    """``factory``: a FAISS ``index_factory`` string, or None for ``default_factory`` of the
    device (stopes' table on a GPU, a bounded one on a CPU); ``train_size``: rows in the
    training sample (None: ``default_train_size`` of the device), drawn with ``seed``;
    ``shard_rows``: database rows per shard file; ``block_rows``: rows converted and added per
    step; ``device``: a ``Device`` or its value, auto (GPU when FAISS sees one), cpu or cuda
    (parsed here: ``ArgumentError`` for another); ``ray``: populate
    the shards as Ray tasks (``local``, ``auto`` or an address; the output directory must be on
    storage every node sees), None in this process; ``resume``: continue the build an earlier
    run of the same settings left unfinished (``xretrieve.index.partial``)."""

    factory: str | None = None
    train_size: int | None = None
    seed: int = 0
    shard_rows: int = 1_000_000
    block_rows: int = 65_536
    device: Device = Device.AUTO
    ray: str | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", parse_device(self.device))


def _use_gpu(device: Device) -> bool:
    """Whether FAISS trains and adds on a GPU for ``device`` (AUTO: when FAISS sees one)."""
    faiss = faiss_module()
    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    if device is Device.CPU:
        return False
    if device is Device.CUDA and gpus == 0:
        raise XRetrieveError(f"device {device.value!r} requested, but FAISS sees no GPU")
    return gpus > 0


def min_training_points(index) -> int:
    """The fewest training rows FAISS accepts for ``index``: one per IVF list and one per PQ
    centroid (256 for 8-bit codes); 0 for indexes without training."""
    faiss = faiss_module()
    if index.is_trained:
        return 0
    needed = inverted_lists(index)
    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf) if ivf is not None else index
    pq = getattr(inner, "pq", None)
    if pq is not None:
        needed = max(needed, int(pq.ksub))
    return max(needed, 1)


# Rows read per step of the training sample.
SAMPLE_BLOCK = 16_384


def _sample(rows: EmbeddingRows, train_size: int, seed: int, report) -> np.ndarray:
    """The seeded training sample, (train_size, d) float32 unit rows, read in blocks."""
    rng = np.random.default_rng(seed)
    sample_ids = np.sort(rng.choice(rows.count, size=train_size, replace=False))
    sample = np.empty((train_size, rows.dim), dtype=np.float32)
    report(TrainingPhase.SAMPLE, 0, train_size)
    for a in range(0, train_size, SAMPLE_BLOCK):
        b = min(a + SAMPLE_BLOCK, train_size)
        sample[a:b] = rows.rows(sample_ids[a:b])
        report(TrainingPhase.SAMPLE, b, train_size)
    return sample


def training_main(job: dict) -> None:
    """The child process of ``_train_to_file`` (``job`` as it writes it): estimate the training
    time, draw the sample, train an empty index in phases and write it to ``job["target"]``
    through a staging file. Reports go to the file descriptor ``job["report_fd"]``, one JSON
    object a line: ``{"estimate": ...}`` first, then ``{"stage", "done", "total"}`` as training
    advances, and ``{"error": reason}`` when it fails."""
    with os.fdopen(job["report_fd"], "w", encoding="utf-8", buffering=1) as report:

        def send(**message) -> None:
            report.write(json.dumps(message) + "\n")

        def phase(step: TrainingPhase, done: int, total: int) -> None:
            send(stage=step.value, done=done, total=total)

        try:
            index = new_index(job["factory"], job["dim"])
            rows = EmbeddingRows([Path(p) for p in job["sources"]])
            send(estimate=_estimate(index, job, rows.count).to_json())
            sample = _sample(rows, job["train_size"], job["seed"], phase)
            train_in_phases(index, sample, job["gpu"], phase)
            staging = f"{job['target']}.tmp"
            faiss_module().write_index(index, staging)
            os.replace(staging, job["target"])
        except XRetrieveError as error:
            send(error=str(error))
        except Exception as error:  # noqa: BLE001 - FAISS's RuntimeError, MemoryError: one line
            reason = faiss_reason(error) or type(error).__name__
            send(error=f"training {job['factory']} failed: {reason}")


def _estimate(index, job: dict, count: int) -> TrainingEstimate:
    faiss = faiss_module()
    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf) if ivf is not None else index
    pq = getattr(inner, "pq", None)
    subquantizers = int(pq.M) if pq is not None else pq_subquantizers(int(index.d))
    lists = int(ivf.nlist) if ivf is not None else 256
    rates = measure_rates(int(index.d), lists, subquantizers, job["gpu"])
    return estimate_training(index, job["factory"], job["train_size"], count, rates, job["gpu"])


_TRAINING_COMMAND = (
    "import json, sys; job = json.loads(sys.argv[1]); sys.path[:0] = job['sys_path']; "
    "from xretrieve.index.build import training_main; training_main(job)"
)


def _training_environment(gpu: bool) -> dict[str, str]:
    """The training process's environment: on a CPU, OpenMP threads that sleep rather than spin
    while they wait (unless the user chose): on a machine whose cores other work shares,
    spinning threads made FAISS's PQ training 3 to 5 times slower (benchmarks/RESULTS.md)."""
    environment = dict(os.environ)
    if not gpu:
        environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return environment


def _train_to_file(
    factory: str,
    rows: EmbeddingRows,
    train_size: int,
    seed: int,
    gpu: bool,
    target: Path,
    progress: ProgressCallback = no_progress,
    on_estimate: EstimateCallback | None = None,
) -> None:
    """Train an empty ``factory`` index on ``train_size`` rows of ``rows`` drawn with ``seed``
    and write it to ``target``, in a child process: FAISS's training holds its thread for
    minutes without letting Python handle a signal, and a child can be stopped at once. The
    child's estimate goes to ``on_estimate`` (and the log) before training starts, its phases to
    ``progress`` as they advance. Ctrl-C or SIGTERM here (``KeyboardInterrupt``) stops the child
    and removes its staging file; ``XRetrieveError`` when training fails. (A plain interpreter,
    not ``multiprocessing``: it would import the caller's main script again.)"""
    read_end, write_end = os.pipe()
    job = {
        "sys_path": sys.path, "factory": factory, "dim": rows.dim,
        "sources": [str(p) for p in rows.paths], "train_size": train_size, "seed": seed,
        "gpu": gpu, "target": str(target), "report_fd": write_end,
    }  # fmt: skip
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _TRAINING_COMMAND, json.dumps(job)],
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            env=_training_environment(gpu),
            start_new_session=True,  # Ctrl-C reaches this process only, which stops the child
        )
    finally:
        os.close(write_end)
    reports = _Reports(read_end, progress, on_estimate)
    try:
        _wait_interruptibly(process, reports)
    finally:
        reports.close()
        Path(f"{target}.tmp").unlink(missing_ok=True)
    if reports.failure or process.returncode != 0:
        raise XRetrieveError(
            reports.failure
            or f"training {factory} failed: its process ended with code "
            f"{process.returncode} (out of memory?)"
        )


class _Reports:
    """The parent's end of the training process's report pipe: lines passed on as they come."""

    def __init__(
        self, fd: int, progress: ProgressCallback, on_estimate: EstimateCallback | None
    ) -> None:
        self.fd, self.progress, self.on_estimate = fd, progress, on_estimate
        self.pending = b""
        self.failure = ""

    def read(self, timeout: float) -> bool:
        """Handle what arrives within ``timeout`` seconds; False once the pipe is closed."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        chunk = os.read(self.fd, 1 << 16)
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self._handle(json.loads(line))
        return bool(chunk)

    def _handle(self, message: dict) -> None:
        if "estimate" in message:
            estimate = TrainingEstimate.from_json(message["estimate"])
            logger.info("%s", estimate.describe())
            if self.on_estimate is not None:
                self.on_estimate(estimate)
        elif "error" in message:
            self.failure = message["error"]
        else:
            self.progress(message["stage"], message["done"], message["total"])

    def close(self) -> None:
        os.close(self.fd)


def _wait_interruptibly(process: subprocess.Popen, reports: _Reports) -> None:
    """Wait for ``process``, passing on its reports and handling signals between short waits;
    on ``KeyboardInterrupt`` (or any error) stop it (SIGTERM, then SIGKILL after
    ``TRAINING_STOP_WAIT`` s)."""
    try:
        while reports.read(timeout=0.5):
            pass
        while True:
            try:
                process.wait(timeout=0.5)
                return
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        process.terminate()
        try:
            process.wait(TRAINING_STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def _populate(trained, rows: EmbeddingRows, start: int, stop: int, block_rows: int, gpu: bool):
    """A copy of ``trained`` holding global rows ``[start, stop)`` under ids ``0..``."""
    faiss = faiss_module()
    shard = faiss.clone_index(trained)
    target, resources = shard, None
    if gpu:
        try:
            resources = faiss.StandardGpuResources()
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True
            target = faiss.index_cpu_to_gpu(resources, 0, shard, options)
        except RuntimeError as error:  # an index type without a GPU version
            logger.warning("adding on the CPU: %s", faiss_reason(error))
            target = shard
    try:
        for a in range(start, stop, block_rows):
            target.add(rows.block(a, min(a + block_rows, stop)))
    except RuntimeError as error:  # e.g. IDMap, which takes no rows without ids
        raise XRetrieveError(
            f"FAISS cannot add rows to this index: {faiss_reason(error)}"
        ) from None
    if target is not shard:
        shard = faiss.index_gpu_to_cpu(target)
    return shard


def write_shard(
    trained, rows: EmbeddingRows, number: int, start: int, stop: int, config: BuildConfig, out: Path
) -> ShardRecord:
    """Populate a copy of ``trained`` with global rows ``[start, stop)`` and write it to
    ``out/shard-{number:05d}.faiss``."""
    faiss = faiss_module()
    shard = _populate(trained, rows, start, stop, config.block_rows, _use_gpu(config.device))
    name = index_shard_name(number)
    faiss.write_index(shard, str(out / name))
    del shard
    return ShardRecord(
        name, start, stop - start, (out / name).stat().st_size, file_sha256(out / name)
    )


def check_build_output(sources: list[Path], out_dir: Path) -> Path:
    """``out_dir`` when an index may be built there from ``sources``: new, empty or an earlier
    index (only index files), never a file, a source, a folder holding one or the current
    directory; its work directory beside it likewise (see ``xretrieve.core.files``). Returns the
    normalised path (``.`` made absolute); ``InputError`` otherwise."""
    inputs = [Path(s) for s in sources]
    out_dir = check_output_path(
        out_dir, directory=True, option="out_dir", inputs=inputs, owner=INDEX_OUTPUT
    )
    check_output_path(
        work_directory(out_dir),
        directory=True,
        option="{out_dir}'s work directory",
        inputs=inputs,
        owner=PARTIAL_OUTPUT,
    )
    return out_dir


@contextlib.contextmanager
def _cluster(address: str | None) -> Iterator[None]:
    """Joined (or started) Ray cluster for the block, when ``address`` is given."""
    if address is None:
        yield
        return
    from xretrieve.core.ray_cluster import connect, ray_module

    started = connect(address)
    try:
        yield
    finally:
        if started:
            ray_module().shutdown()


def build_index(
    sources: list[Path],
    out_dir: Path,
    config: BuildConfig = BuildConfig(),
    *,
    progress: ProgressCallback | None = None,
    on_estimate: EstimateCallback | None = None,
) -> IndexManifest:
    """Build an index over the rows of ``sources`` (``.npy`` float16/32, one dimension, or a
    finished ``embed --ray`` directory, read as its shard files in order) into ``out_dir``. It
    appears complete or not at all; an interrupted build resumes (see
    ``xretrieve.index.partial``; ``config.resume``).

    ``progress`` sees the stages in order: ``check sources``, ``hash sources``, the training
    phases (``TrainingPhase`` values: ``sample`` in rows, ``OPQ`` and ``coarse k-means`` in
    iterations, ``PQ``), then ``add to index`` in rows. ``on_estimate`` gets the estimate of the
    training (and adding) time, measured on this machine, before training starts (not called
    when nothing is trained: a ``Flat`` index, or a resumed build that had trained).

    Raises ``InputError`` for an output that may not be written (``check_build_output``),
    unreadable, non-finite or mismatched sources, or another build of ``out_dir`` running, and
    ``XRetrieveError`` for a factory FAISS rejects or a training sample smaller than the index
    needs; each before anything is written.
    """
    progress = progress or no_progress
    if config.shard_rows < 1 or config.block_rows < 1:
        raise XRetrieveError("shard_rows and block_rows must be positive")
    out_dir = check_build_output(sources, Path(out_dir))
    files = expand_shard_directories([Path(s) for s in sources])
    rows = EmbeddingRows([f.path for f in files])
    plan = _plan(rows, config)
    with build_lock(out_dir), _cluster(config.ray):
        progress("check sources", 0, 1)
        rows.check_finite()
        progress("check sources", 1, 1)
        records = _hashed_sources(files, rows, progress)
        partial = open_partial(out_dir, _settings(plan, config, records), config.resume)
        trained = _trained(plan, rows, config.seed, partial, progress, on_estimate)
        ranges = [
            (start, min(start + config.shard_rows, rows.count))
            for start in range(0, rows.count, config.shard_rows)
        ]
        shards = _shards(trained, rows, ranges, config, partial, progress)
        manifest = IndexManifest(
            format_version=FORMAT_VERSION,
            factory=plan.factory,
            factory_note=plan.note,
            dimension=rows.dim,
            count=rows.count,
            metric="inner_product",
            normalized=True,
            train_size=plan.train_size,
            seed=config.seed,
            faiss_version=faiss_module().__version__,
            sources=tuple(records),
            shards=tuple(shards),
            lists=inverted_lists(trained),
        )
        write_index_manifest(partial.directory, manifest)
        partial.finish(out_dir)
    return manifest


@dataclass(frozen=True)
class _Plan:
    """What a build does, decided and checked before anything is written: the ``factory`` (and
    the ``note`` on how it differs from stopes'), its ``empty`` index, the training sample size
    (0: no training) and whether FAISS uses a GPU (which chooses the defaults)."""

    factory: str
    note: str
    empty: Any
    train_size: int
    gpu: bool


def _plan(rows: EmbeddingRows, config: BuildConfig) -> _Plan:
    gpu = _use_gpu(config.device)
    factory, note = (
        (config.factory, "") if config.factory else default_factory(rows.count, rows.dim, gpu)
    )
    if note:
        logger.info("%s", note)
    empty = new_index(factory, rows.dim)
    train_size = _check_train_size(empty, factory, rows.count, config.train_size, gpu)
    return _Plan(factory, note, empty, train_size, gpu)


def _settings(plan: _Plan, config: BuildConfig, records: list[SourceRecord]) -> dict[str, Any]:
    """What a resumed build must share with the interrupted one (``open_partial``)."""
    return {
        "format_version": FORMAT_VERSION,
        "faiss_version": faiss_module().__version__,
        "factory": plan.factory,
        "train_size": plan.train_size,
        "seed": config.seed,
        "shard_rows": config.shard_rows,
        "gpu": plan.gpu,
        # Trained in phases without polysemous PQ training: a trained index an earlier version
        # left is not reused.
        "training": "phases-1",
        "sources": [_settings_record(record) for record in records],
    }


def _settings_record(record: SourceRecord) -> dict:
    """A source as the resume settings compare it: its content, not when it was last touched."""
    return {key: value for key, value in record.__dict__.items() if key != "mtime_ns"}


def _hashed_sources(
    files: list[SourceFile], rows: EmbeddingRows, progress: ProgressCallback
) -> list[SourceRecord]:
    """The record of each source file; a shard of an ``embed --ray`` directory keeps the digest
    its check against that directory's manifest computed (hashed once)."""
    records = []
    progress("hash sources", 0, len(files))
    for source, f in zip(files, rows.files, strict=True):
        path = f.path.resolve()
        stat = path.stat()  # before hashing: a later change then differs from the record
        digest = source.sha256 if source.sha256 is not None else file_sha256(path)
        records.append(
            SourceRecord(str(path), f.rows, f.dtype, stat.st_size, digest, stat.st_mtime_ns)
        )
        progress("hash sources", len(records), len(files))
    return records


def _trained(
    plan: _Plan,
    rows: EmbeddingRows,
    seed: int,
    partial: PartialBuild,
    progress: ProgressCallback,
    on_estimate: EstimateCallback | None,
):
    """The empty index of ``plan`` trained (or the trained index an interrupted build saved in
    ``partial``; a damaged one is discarded with a warning and trained again)."""
    faiss = faiss_module()
    if partial.has_trained():
        try:
            return faiss.read_index(str(partial.trained_path))
        except RuntimeError as error:
            logger.warning(
                "discarding the damaged trained index %s (%s): training again",
                partial.trained_path,
                faiss_reason(error),
            )
            partial.discard_trained()
    if not plan.train_size:
        staging = partial.trained_path.with_name(partial.trained_path.name + ".tmp")
        faiss.write_index(plan.empty, str(staging))
        os.replace(staging, partial.trained_path)
        return plan.empty
    logger.info("training %s on %d rows (seed %d)", plan.factory, plan.train_size, seed)
    _train_to_file(
        plan.factory, rows, plan.train_size, seed, plan.gpu, partial.trained_path, progress,
        on_estimate,
    )  # fmt: skip
    return faiss.read_index(str(partial.trained_path))


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


def _check_train_size(index, factory: str, count: int, train_size: int | None, gpu: bool) -> int:
    """The sample size to train with (0: no training; None: the device's default), or
    ``XRetrieveError`` when too small."""
    needed = min_training_points(index)
    if not needed:
        return 0
    lists = inverted_lists(index)
    size = train_size if train_size is not None else default_train_size(count, max(lists, 1), gpu)
    if size > count:
        raise ArgumentError("train_size", f"{size} exceeds the {count} rows of the sources")
    if size < needed:
        raise InputError(
            None,
            f"too few training points for {factory}: {size} "
            f"({'{train_size}' if train_size is not None else 'all rows'}), at least {needed} "
            f"needed (FAISS advises {FAISS_ADVISED_PER_CENTROID * max(lists, 1)}); "
            "use a smaller IVF or more rows",
            arguments=("train_size",),
        )
    if lists and size < FAISS_ADVISED_PER_CENTROID * lists:
        logger.warning(
            "training %s on %d rows: FAISS advises at least %d",
            factory,
            size,
            FAISS_ADVISED_PER_CENTROID * lists,
        )
    return size
