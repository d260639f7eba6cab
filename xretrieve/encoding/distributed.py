"""Embed a large text file on a Ray cluster: the input is cut into shards of ``shard_lines``
lines (boundaries depend on that number alone, so reruns agree), a pool of encoder actors (one
GPU each when the cluster has GPUs, one CPU each otherwise) embeds them, and each shard becomes
``shard-NNNNN.npy`` in the output directory, written atomically, with ``manifest.json`` (see
``xretrieve.formats.embedding_shards``) rewritten after every shard.

A rerun with the same settings skips the shards whose files match the manifest (size and
sha256) and embeds the rest; other settings are refused unless ``overwrite``. A dead actor is
restarted by Ray (``max_restarts``), reloads the model and redoes its shard (``max_task_retries``),
so the shards always equal ``embed_file``'s rows for the same lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from xretrieve.core.cache import content_hash
from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.integrity import file_matches, file_sha256
from xretrieve.core.outputs import check_output_path
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.ray_cluster import connect, get_result, gpus_per_worker, ray_module
from xretrieve.core.settings import (
    Backend,
    Device,
    Dtype,
    parse_backend,
    parse_device,
    parse_dtype,
)
from xretrieve.encoding.encoder import SentenceEncoder
from xretrieve.encoding.load import ENCODER_DTYPES, load_encoder, resolve_model
from xretrieve.encoding.streaming import (
    OutputDtype,
    check_utf8,
    read_line_windows,
    write_embeddings,
)
from xretrieve.formats.embedding_shards import (
    SHARDS_OUTPUT,
    ShardEntry,
    ShardSettings,
    ShardsManifest,
    read_shards_manifest,
    remove_shards,
    shard_name,
    write_shards_manifest,
)

logger = logging.getLogger(__name__)

DEFAULT_SHARD_LINES = 1_000_000
_BLOCK_BYTES = 8 << 20
# Seconds to wait for killed actors' shards to be reported as failed.
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EncoderSpec:
    """The ``load_encoder`` arguments every actor loads its encoder with (``backend``,
    ``device`` and ``dtype`` given as strings are parsed on construction, so a bad one fails
    before Ray starts)."""

    model: str
    backend: Backend = Backend.ORT
    device: Device = Device.AUTO
    batch_tokens: int = 16384
    dtype: Dtype = Dtype.AUTO
    layers: tuple[int, ...] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_backend(self.backend))
        object.__setattr__(self, "device", parse_device(self.device))
        object.__setattr__(self, "dtype", parse_dtype(self.dtype, allowed=ENCODER_DTYPES))

    def load(self) -> SentenceEncoder:
        return load_encoder(
            self.model,
            backend=self.backend,
            device=self.device,
            batch_tokens=self.batch_tokens,
            dtype=self.dtype,
            layers=self.layers,
            prompt=self.prompt,
        )


@dataclass(frozen=True)
class ShardJob:
    """Lines ``first_line .. first_line + lines - 1`` (0-based), starting at byte ``start_byte``."""

    number: int
    first_line: int
    lines: int
    start_byte: int


@dataclass(frozen=True)
class InputScan:
    """One pass over the input: its size, sha256, line count and the shard jobs."""

    bytes: int
    sha256: str
    lines: int
    jobs: tuple[ShardJob, ...]


@dataclass(frozen=True)
class ShardedEmbedResult:
    """``embedded``: shards computed by this run; ``skipped``: complete ones found on disk."""

    directory: Path
    manifest: ShardsManifest
    embedded: int
    skipped: int

    @property
    def shape(self) -> tuple[int, ...]:
        settings = self.manifest.settings
        width = (len(self.manifest.model_layers),) if settings.layer_outputs else ()
        return (settings.input_lines, *width, self.manifest.dim)

    def to_json(self) -> dict:
        """The summary ``xretrieve embed --ray --json`` prints: the manifest as written."""
        return self.manifest.to_json()


def scan_input(path: Path, shard_lines: int) -> InputScan:
    """Size, sha256 and lines of ``path`` (a last line without a newline counts), and its
    shards of ``shard_lines`` lines with the byte offset where each starts. A byte that is not
    UTF-8 is an ``InputError`` naming its line, found here before any actor starts."""
    if shard_lines < 1:
        raise XRetrieveError("shard_lines must be positive")
    digest = hashlib.sha256()
    newlines, position, carry = 0, 0, b""
    starts = [0]
    try:
        handle = Path(path).open("rb")
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    with handle:
        for block in iter(lambda: handle.read(_BLOCK_BYTES), b""):
            digest.update(block)
            # Whole lines only, so that no multi-byte character is split between blocks.
            data = carry + block
            cut = data.rfind(b"\n") + 1
            check_utf8(path, data[:cut], first_line=newlines + 1)
            carry = data[cut:]
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
            counts = newlines + np.arange(1, ends.size + 1)
            starts.extend(int(position + e + 1) for e in ends[counts % shard_lines == 0])
            newlines += ends.size
            position += len(block)
    check_utf8(path, carry, first_line=newlines + 1)
    lines = newlines + (1 if carry else 0)
    n_shards = -(-lines // shard_lines)
    jobs = tuple(
        ShardJob(k, k * shard_lines, min(shard_lines, lines - k * shard_lines), starts[k])
        for k in range(n_shards)
    )
    return InputScan(position, digest.hexdigest(), lines, jobs)


class _EmbedActor:
    """Holds one encoder; Ray re-runs ``__init__`` (reloading the model) on restart."""

    def __init__(self, spec: EncoderSpec) -> None:
        self.encoder = spec.load()

    def info(self) -> tuple[str, int, tuple[int, ...], int]:
        """Model name, dim, layers and the number of layer outputs."""
        encoder = self.encoder
        return encoder.name, encoder.dim, encoder.layers, encoder.backend.n_layers

    def embed(
        self, input_path: str, job: ShardJob, out: str, out_dtype: OutputDtype, layer_outputs: bool
    ) -> ShardEntry:
        source, path = Path(input_path), Path(out)
        windows = read_line_windows(
            source,
            self.encoder.window,
            start_byte=job.start_byte,
            first_line=job.first_line,
            lines=job.lines,
        )
        write_embeddings(
            self.encoder,
            windows,
            job.lines,
            source,
            path,
            first_line=job.first_line,
            layer_outputs=layer_outputs,
            out_dtype=out_dtype,
        )
        return ShardEntry(
            job.number, job.first_line, job.lines, path.name, path.stat().st_size, file_sha256(path)
        )

    def pid(self) -> int:
        return os.getpid()


@cache
def _actor_class():
    return ray_module().remote(_EmbedActor)


def _verified(directory: Path, entries: tuple[ShardEntry, ...]) -> dict[int, ShardEntry]:
    """The recorded shards whose files are still there with the recorded size and sha256."""
    kept = {}
    for entry in entries:
        if file_matches(directory / entry.file, entry.bytes, entry.sha256):
            kept[entry.number] = entry
        else:
            logger.info("shard %d (%s) is missing or changed: embedding it again", entry.number,
                        directory / entry.file)  # fmt: skip
    return kept


def _remove_partial_shards(directory: Path) -> None:
    """Delete the temporary files of shard writes that did not finish (an actor killed mid-write
    cannot remove its own)."""
    for leftover in directory.glob(".shard-*.tmp"):
        leftover.unlink(missing_ok=True)


def _previous_shards(
    directory: Path, settings: ShardSettings, overwrite: bool
) -> tuple[dict[int, ShardEntry], ShardsManifest | None]:
    """Shards a previous run with the same settings finished, and its manifest; refuses other
    settings unless ``overwrite`` (whose caller then clears our files: ``remove_shards``)."""
    if not directory.is_dir() or overwrite:
        return {}, None
    manifest = read_shards_manifest(directory)
    if manifest is None:
        return {}, None
    differences = manifest.settings.differences(settings)
    if differences:
        raise InputError(
            directory,
            "holds shards embedded with other settings ("
            + "; ".join(differences)
            + "): rerun with the same arguments to resume, or pass {overwrite=True} to start again",
            arguments=("overwrite",),
        )
    return _verified(directory, manifest.shards), manifest


class RayEmbedder:
    """Embeds shards on a pool of encoder actors. ``address``: ``local``, ``auto`` or
    ``ray://host:port``; ``pool_size``: actors (None: one per GPU, else one per CPU; at most
    one per shard to do); ``max_restarts``: restarts per actor (and retries per shard).
    ``actors`` lists the live pool during a run, for inspection."""

    def __init__(
        self, address: str = "local", *, pool_size: int | None = None, max_restarts: int = 3
    ) -> None:
        ray_module()  # the install hint before any other work
        self.address = address
        self.pool_size = pool_size
        self.max_restarts = max_restarts
        self.actors: list = []
        self._running: dict = {}  # future -> actor, the shards being embedded

    def run(
        self,
        spec: EncoderSpec,
        input_path: Path,
        out: Path,
        *,
        shard_lines: int = DEFAULT_SHARD_LINES,
        out_dtype: OutputDtype = OutputDtype.FP32,
        layer_outputs: bool = False,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ShardedEmbedResult:
        """Embed ``input_path`` into shard files in the directory ``out`` (see the module
        docstring)."""
        progress = progress or no_progress
        input_path, model_path = Path(input_path), resolve_model(spec.model).path
        directory = check_output_path(
            out, directory=True, inputs=[input_path, model_path], owner=SHARDS_OUTPUT
        )
        scan = scan_input(input_path, shard_lines)
        settings = ShardSettings(
            model=str(spec.model),
            model_hash=content_hash(model_path),
            backend=spec.backend.value,
            compute_dtype=spec.dtype.value,
            layers=spec.layers,
            layer_outputs=layer_outputs,
            out_dtype=out_dtype.value,
            input_path=str(input_path.resolve()),
            input_bytes=scan.bytes,
            input_sha256=scan.sha256,
            input_lines=scan.lines,
            shard_lines=shard_lines,
            prompt=spec.prompt,
        )
        done, previous = _previous_shards(directory, settings, overwrite)
        todo = [job for job in scan.jobs if job.number not in done]
        if not todo and previous is not None:
            _remove_partial_shards(directory)  # of an earlier run killed mid-write
            progress("embed shards", len(done), len(scan.jobs))
            return ShardedEmbedResult(directory, previous, 0, len(done))
        started = connect(self.address)  # before anything is changed: it may be unreachable
        try:
            if overwrite and directory.is_dir():  # the output guard made sure it holds only ours
                remove_shards(directory)
            directory.mkdir(parents=True, exist_ok=True)
            manifest = self._start_pool(spec, settings, len(scan.jobs), len(todo) or 1)
            manifest = replace(manifest, shards=tuple(done[k] for k in sorted(done)))
            write_shards_manifest(directory, manifest)
            manifest = self._embed(manifest, todo, input_path, directory, progress)
        finally:  # also on Ctrl-C and SIGTERM (Terminated): the manifest lists finished shards
            self._stop_pool()
            if started:
                ray_module().shutdown()
            if directory.is_dir():  # of this run's killed actors, or of an earlier run
                _remove_partial_shards(directory)
        return ShardedEmbedResult(directory, manifest, len(todo), len(done))

    def _start_pool(
        self, spec: EncoderSpec, settings: ShardSettings, n_shards: int, most: int
    ) -> ShardsManifest:
        """Start the actors (the first alone, so that a checkpoint's first-use export runs once)
        and return an empty manifest with the encoder's dim and layers."""
        ray = ray_module()
        gpus = gpus_per_worker()
        resources = ray.cluster_resources()
        size = self.pool_size or max(1, int(resources.get("GPU" if gpus else "CPU", 1)))
        actor = _actor_class().options(
            num_cpus=1,
            num_gpus=gpus,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
        )
        self.actors = [actor.remote(spec)]
        name, dim, layers, n_layers = self._result(self.actors[0].info.remote())
        self.actors += [actor.remote(spec) for _ in range(min(size, most) - 1)]
        logger.info("embedding with %d actors of %s (%d GPU each)", len(self.actors), name, gpus)
        return ShardsManifest(settings, dim, tuple(layers), n_shards, ())

    def _embed(
        self,
        manifest: ShardsManifest,
        todo: list[ShardJob],
        input_path: Path,
        directory: Path,
        progress: ProgressCallback,
    ) -> ShardsManifest:
        """Keep every actor busy with one shard; record each finished shard in the manifest."""
        ray = ray_module()
        settings = manifest.settings
        out_dtype = OutputDtype(settings.out_dtype)
        queue = list(reversed(todo))
        running = self._running
        entries = {e.number: e for e in manifest.shards}

        def submit(actor) -> None:
            job = queue.pop()
            out = str(directory / shard_name(job.number))
            future = actor.embed.remote(
                str(input_path), job, out, out_dtype, settings.layer_outputs
            )
            running[future] = actor

        for actor in self.actors[: len(queue)]:
            submit(actor)
        progress("embed shards", len(entries), manifest.n_shards)
        while running:
            (future,), _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(future)
            entry = self._result(future)
            entries[entry.number] = entry
            manifest = replace(manifest, shards=tuple(entries[k] for k in sorted(entries)))
            write_shards_manifest(directory, manifest)
            progress("embed shards", len(entries), manifest.n_shards)
            if queue:
                submit(actor)
        return manifest

    def _result(self, future):
        return get_result(future, "an embedding actor", self.max_restarts)

    def _stop_pool(self) -> None:
        """Kill the actors and wait (boundedly) until Ray reports the shards they were embedding
        as failed, so that no actor writes any more when the caller removes partial files; the
        failures are collected, or Ray would print each one as an unhandled error."""
        ray = ray_module()
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor)
        pending, ended = list(self._running), []
        if pending:
            with contextlib.suppress(Exception):
                ended, _ = ray.wait(pending, num_returns=len(pending), timeout=_STOP_TIMEOUT_S)
        for future in ended:
            with contextlib.suppress(Exception):
                ray.get(future)
        self.actors, self._running = [], {}
