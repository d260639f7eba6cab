"""Embedding throughput: ``bench_embedding(model, EmbedSetting, texts)`` loads an encoder, warms
it up and times ``repeats`` runs (the fastest kept): sentences/s, tokens/s (real tokens, special
tokens included), padding efficiency (real / padded tokens), batch latency p50/p95, peak host
RSS and peak GPU memory (CUDA only) sampled while it runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.bench.machine import MemoryPeak, _synchronize
from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Backend, Device, Dtype, parse_backend, parse_device, parse_dtype

if TYPE_CHECKING:
    from xretrieve.encoding.ort_backend import OrtOptions


logger = logging.getLogger(__name__)


BACKENDS = tuple(backend.value for backend in Backend)


# The dtypes a setting names (``xretrieve bench --dtypes``); AUTO too (an export's own).
DTYPES = (Dtype.FP16.value, Dtype.FP32.value)
_SETTING_DTYPES = (Dtype.AUTO, Dtype.FP16, Dtype.FP32)


@dataclass(frozen=True)
class EmbedSetting:
    """One configuration to time: ``backend`` ORT or TORCH, ``dtype`` FP16 or FP32 (AUTO for an
    export directory, which has its own), ``device`` AUTO, CPU or CUDA, ``batch_tokens`` (bound
    on batch size x padded length), ``ort_options`` (ONNX Runtime tuning, ort only).
    ``backend``, ``dtype`` and ``device`` take members or their values."""

    backend: Backend
    dtype: Dtype
    device: Device = Device.AUTO
    batch_tokens: int = 16384
    repeats: int = 1
    ort_options: OrtOptions | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_backend(self.backend))
        object.__setattr__(self, "dtype", parse_dtype(self.dtype, allowed=_SETTING_DTYPES))
        object.__setattr__(self, "device", parse_device(self.device))


@dataclass(frozen=True)
class EmbedResult:
    """The fastest of ``repeats`` runs of one ``EmbedSetting``. Batch latencies are the times
    between consecutive batch completions of that run (the first includes tokenising the first
    window), in milliseconds. ``peak_rss_mb`` is the process's resident peak while the setting
    was loaded and run (earlier settings' memory may still be held); ``peak_gpu_mb`` the device
    memory peak above the level at its start (None on the CPU)."""

    backend: Backend
    dtype: Dtype
    device: Device
    provider: str
    batch_tokens: int
    sentences: int
    real_tokens: int
    padded_tokens: int
    batches: int
    seconds: float
    sentences_per_s: float
    tokens_per_s: float
    padding_efficiency: float
    batch_p50_ms: float
    batch_p95_ms: float
    peak_rss_mb: float
    peak_gpu_mb: float | None
    dim: int


class _BatchClock:
    """A ProgressCallback recording when each batch finished (done grows once per batch)."""

    def __init__(self, forward: ProgressCallback) -> None:
        self.times: list[float] = []
        self._forward = forward

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        self.times.append(time.perf_counter())
        self._forward(stage, done, total)

    def latencies_ms(self) -> np.ndarray:
        return np.diff(np.asarray(self.times)) * 1000.0


def bench_embedding(
    model: str | Path | None,
    setting: EmbedSetting,
    texts: Sequence[str],
    *,
    text_prefix: str | None = None,
    progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Load ``model`` (see ``xretrieve.encoding.load_encoder``; None = the default model) with
    ``setting``, warm it up on up to 512 texts (kernels, arena, autotuning), then encode
    ``texts`` ``setting.repeats`` times and keep the fastest run. Progress: stage
    "embed <backend> <dtype> <batch_tokens>", done = sentences of the current run."""
    from xretrieve.encoding.load import load_encoder, usable_device

    if setting.repeats < 1 or not texts:
        raise XRetrieveError("need at least one repeat and one sentence to benchmark")
    progress = progress or no_progress
    stage = f"embed {setting.backend.value} {setting.dtype.value} {setting.batch_tokens}"
    device = usable_device(setting.device, setting.backend)
    memory = MemoryPeak(cuda=device is Device.CUDA)
    try:
        encoder = load_encoder(
            model,
            backend=setting.backend,
            device=device,
            dtype=setting.dtype,
            batch_tokens=setting.batch_tokens,
            text_prefix=text_prefix,
            ort_options=setting.ort_options,
        )
        encoder.encode(texts[: min(len(texts), 512)])
        best, best_latencies = None, np.zeros(0)
        for _ in range(setting.repeats):
            clock = _BatchClock(lambda _stage, done, total: progress(stage, done, total))
            encoder.encode(texts, progress=clock)
            _synchronize(device)
            stats = encoder.last_stats
            if best is None or stats.seconds < best.seconds:
                best, best_latencies = stats, clock.latencies_ms()
    finally:
        rss, gpu = memory.stop()
    return EmbedResult(
        backend=setting.backend,
        dtype=setting.dtype,
        device=device,
        provider=best.provider,
        batch_tokens=setting.batch_tokens,
        sentences=best.sentences,
        real_tokens=best.real_tokens,
        padded_tokens=best.padded_tokens,
        batches=best.batches,
        seconds=best.seconds,
        sentences_per_s=best.sentences_per_s,
        tokens_per_s=best.tokens_per_s,
        padding_efficiency=best.padding_efficiency,
        batch_p50_ms=float(np.percentile(best_latencies, 50)) if best_latencies.size else 0.0,
        batch_p95_ms=float(np.percentile(best_latencies, 95)) if best_latencies.size else 0.0,
        peak_rss_mb=rss / 2**20,
        peak_gpu_mb=None if gpu is None else gpu / 2**20,
        dim=encoder.dim,
    )
