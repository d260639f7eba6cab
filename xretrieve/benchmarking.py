"""Throughput measurements shared by ``xretrieve bench`` and ``benchmarks/bench_*.py``.

- Embedding: ``bench_embedding(model, EmbedSetting, texts)`` loads an encoder, warms it up and
  times ``repeats`` runs (the fastest kept): sentences/s, tokens/s (real tokens, special tokens
  included), padding efficiency (real / padded tokens), batch latency p50/p95, peak host RSS and
  peak GPU memory (CUDA only) sampled while it runs.
- kNN + margin: ``bench_knn_margin(src, tgt, k, methods)`` runs exact kNN both ways and the
  ratio margin with ``max`` selection (``xretrieve.margin.mine``'s two steps, timed apart) with
  each method of ``knn_methods()`` (numpy brute force, FAISS CPU, the chunk engine on the CPU,
  and where a GPU exists the engine on it beside the peers: a bare torch fp16 loop, FAISS GPU
  flat, sentence-transformers' ``semantic_search``), with per-phase times and peak GPU memory,
  and checks the mined pairs and the neighbours agree with the first method.

Nothing here prints; results are frozen dataclasses, ``report_dict`` turns them into JSON-ready
dicts and ``plot_report`` draws them (matplotlib, Agg) into a PNG written atomically.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xretrieve.devices import torch_cuda_available
from xretrieve.encoding.settings import Backend, Device, SourceKind, parse_backend, parse_device
from xretrieve.errors import XRetrieveError
from xretrieve.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    from xretrieve.encoding.ort_backend import OrtOptions

logger = logging.getLogger(__name__)

KnnResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
KnnMethod = Callable[[np.ndarray, np.ndarray, int, ProgressCallback], KnnResult]

BACKENDS = tuple(backend.value for backend in Backend)
DTYPES = ("fp16", "fp32")
# How often the memory sampler looks: short enough to catch a batch's peak on a GPU.
SAMPLE_SECONDS = 0.005
WORDS = (
    "the of and to in is was for on that with as by at from this be are it an not or have "
    "der die und den von zu das mit sich des auf ist im dem nicht ein eine als auch "
    "le la les de des et un une est en du que qui dans pour pas sur au "
    "cat dog house tree water city river book car sun moon day night small big red green"
).split()


# ---------------------------------------------------------------------------------------------
# Workloads


def make_sentences(
    n: int, seed: int = 0, median_tokens: float = 20.0, sigma: float = 0.6
) -> list[str]:
    """``n`` sentences of common words (one token each for XLM-R-style vocabularies), whose
    lengths follow a log-normal around ``median_tokens`` (special tokens included; BUCC and
    Tatoeba sentences have a median near 20), clipped to [3, 128]."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(median_tokens), sigma, size=n)), 3, 128)
    return [" ".join(rng.choice(WORDS, size=int(length) - 2)) for length in lengths]


@dataclass(frozen=True)
class WordPieces:
    """A tokenizer's vocabulary split for text generation: ``starts`` open a word (SentencePiece
    pieces with the ``▁`` marker, WordPiece pieces without ``##``), ``continuations`` extend one;
    both without their markers, alphabetic only (no special tokens, digits or punctuation)."""

    starts: tuple[str, ...]
    continuations: tuple[str, ...]


def word_pieces(vocabulary: Sequence[str], special_tokens: Sequence[str] = ()) -> WordPieces:
    """Split ``vocabulary`` (a tokenizer's pieces) into word-opening and continuing pieces,
    sorted for determinism; ``XRetrieveError`` when either kind is missing."""
    special = set(special_tokens)
    wordpiece = any(piece.startswith("##") for piece in vocabulary)
    starts, continuations = set(), set()
    for piece in vocabulary:
        if piece in special:
            continue
        if wordpiece:
            is_start, text = not piece.startswith("##"), piece.removeprefix("##")
        else:
            is_start, text = piece.startswith("\u2581"), piece.removeprefix("\u2581")
        if not text.isalpha():
            continue
        (starts if is_start else continuations).add(text)
    if not starts or not continuations:
        raise XRetrieveError("the vocabulary has no word-opening or no word-continuing pieces")
    return WordPieces(tuple(sorted(starts)), tuple(sorted(continuations)))


def make_vocabulary_sentences(
    pieces: WordPieces,
    n: int,
    seed: int = 0,
    median_tokens: float = 25.0,
    sigma: float = 0.55,
    max_tokens: int = 128,
) -> list[str]:
    """``n`` sentences of word-like tokens glued from vocabulary ``pieces``, whose token counts
    (two special tokens included) follow a log-normal around ``median_tokens`` clipped to
    [3, ``max_tokens``] (BUCC sentences: median about 25 XLM-R tokens). A word is one opening
    piece and 0-2 continuing ones (each 1 + geometric(0.6) - 1, so most words are one piece), so
    a tokenizer that segments them back into those pieces gives the drawn count; segmentations
    that merge or split pieces move it a little (``length_summary`` reports what came out)."""
    rng = np.random.default_rng(seed)
    targets = np.clip(np.round(rng.lognormal(np.log(median_tokens), sigma, size=n)), 3, max_tokens)
    starts, continuations = np.asarray(pieces.starts), np.asarray(pieces.continuations)
    sentences = []
    for target in targets.astype(int):
        remaining, words = target - 2, []
        while remaining > 0:
            extra = min(int(rng.geometric(0.6)) - 1, 2, remaining - 1)
            word = str(rng.choice(starts)) + "".join(rng.choice(continuations, size=extra))
            words.append(word)
            remaining -= 1 + extra
        sentences.append(" ".join(words))
    return sentences


def length_summary(lengths: np.ndarray, max_length: int) -> dict[str, float]:
    """Token-count distribution of a workload: median, mean, p10/p90/p99, max, and the fraction
    of texts at ``max_length`` (truncated, or exactly at the cap)."""
    lengths = np.asarray(lengths)
    return {
        "texts": int(lengths.size),
        "median": float(np.median(lengths)),
        "mean": round(float(np.mean(lengths)), 2),
        "p10": float(np.percentile(lengths, 10)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "fraction_at_max_length": round(float(np.mean(lengths >= max_length)), 4),
    }


def make_knn_data(
    n_src: int,
    n_tgt: int,
    dim: int,
    seed: int = 0,
    *,
    dtype: type = np.float32,
    device: str = "cpu",
    block_rows: int = 262144,
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_src, dim)`` and ``(n_tgt, dim)`` L2-normalised random rows of ``dtype`` (float32 or
    float16); half of the smaller side are planted noisy translation pairs (so mining has
    something to find), the targets shuffled. Generated block by block with torch on
    ``device`` (a GPU makes 4M x 1024 take seconds); the same seed gives the same rows on the
    same kind of device."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    planted = min(n_src, n_tgt) // 2
    src = np.empty((n_src, dim), dtype=dtype)
    tgt = np.empty((n_tgt, dim), dtype=dtype)
    # Generated target row j lands at row position[j]: a shuffle without a second copy.
    position = np.argsort(np.random.default_rng(seed).permutation(n_tgt))

    def normal(rows: int) -> torch.Tensor:
        return torch.randn((rows, dim), generator=generator, device=device)

    def store(values: torch.Tensor) -> np.ndarray:
        values = torch.nn.functional.normalize(values, dim=1)
        return values.to(torch.float16 if dtype == np.float16 else torch.float32).cpu().numpy()

    for start in range(0, max(n_src, n_tgt), block_rows):
        src_rows = normal(max(0, min(n_src, start + block_rows) - start))
        if len(src_rows):
            src[start : start + len(src_rows)] = store(src_rows)
        tgt_rows = normal(max(0, min(n_tgt, start + block_rows) - start))
        pairs = max(0, min(planted, start + block_rows) - start)
        if pairs:
            tgt_rows[:pairs] = src_rows[:pairs] + 0.5 * normal(pairs)
        if len(tgt_rows):
            tgt[position[start : start + len(tgt_rows)]] = store(tgt_rows)
    return src, tgt


def parse_names(value: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """Comma-separated ``value`` -> names, each one of ``allowed``; else ``XRetrieveError``."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    wrong = [name for name in names if name not in allowed]
    if wrong or not names:
        raise XRetrieveError(
            f"invalid {what} {value!r}: give a comma-separated list of {', '.join(allowed)}"
        )
    return names


# ---------------------------------------------------------------------------------------------
# Machine and memory


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. On Linux VmHWM of /proc/self/status: getrusage's
    ru_maxrss also counts the parent's resident set at fork time, before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()
    return pages * os.sysconf("SC_PAGE_SIZE")


class MemoryPeak:
    """Peak host RSS and (with ``cuda``) peak device memory in use, sampled every 5 ms in a
    thread between construction and ``stop()``. The whole device is watched because ONNX
    Runtime's arena is invisible to torch's allocator statistics: run nothing else on it."""

    def __init__(self, cuda: bool) -> None:
        self._cuda = None
        if cuda:
            import torch

            self._cuda = torch.cuda
            free, total = torch.cuda.mem_get_info()
            self.gpu_baseline = total - free
            self.gpu_peak = self.gpu_baseline
        self.rss_peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_peak = max(self.rss_peak, _rss_bytes())
            if self._cuda is not None:
                free, total = self._cuda.mem_get_info()
                self.gpu_peak = max(self.gpu_peak, total - free)
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> tuple[int, int | None]:
        """``(peak host RSS bytes, peak GPU bytes above the starting level or None)``."""
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, _rss_bytes())
        gpu = self.gpu_peak - self.gpu_baseline if self._cuda is not None else None
        return self.rss_peak, gpu


def machine_info() -> dict[str, Any]:
    """Versions, CPU, GPU and load averages (other processes skew CPU figures)."""
    import faiss
    import onnxruntime
    import torch
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "faiss": faiss.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


# ---------------------------------------------------------------------------------------------
# Embedding


@dataclass(frozen=True)
class EmbedSetting:
    """One configuration to time: ``backend`` ort|torch, ``dtype`` fp16|fp32 (auto for an
    export directory, which has its own), ``device`` auto|cpu|cuda, ``batch_tokens`` (bound on
    batch size x padded length), ``ort_options`` (ONNX Runtime tuning, ort only). ``backend``
    and ``device`` take members or their values."""

    backend: Backend
    dtype: str
    device: Device = Device.AUTO
    batch_tokens: int = 16384
    repeats: int = 1
    ort_options: OrtOptions | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_backend(self.backend))
        object.__setattr__(self, "device", parse_device(self.device))


@dataclass(frozen=True)
class EmbedResult:
    """The fastest of ``repeats`` runs of one ``EmbedSetting``. Batch latencies are the times
    between consecutive batch completions of that run (the first includes tokenising the first
    window), in milliseconds. ``peak_rss_mb`` is the process's resident peak while the setting
    was loaded and run (earlier settings' memory may still be held); ``peak_gpu_mb`` the device
    memory peak above the level at its start (None on the CPU)."""

    backend: Backend
    dtype: str
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
    from xretrieve.encoding import load_encoder, resolve_device

    if setting.repeats < 1 or not texts:
        raise XRetrieveError("need at least one repeat and one sentence to benchmark")
    progress = progress or no_progress
    stage = f"embed {setting.backend.value} {setting.dtype} {setting.batch_tokens}"
    device = resolve_device(setting.device, setting.backend)
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


def _synchronize(device: Device) -> None:
    if device is Device.CUDA:
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# kNN + margin


def numpy_topk(
    queries: np.ndarray, database: np.ndarray, k: int, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force peer: ``(n, k)`` float32 inner products best first and int64 ids, by blocked
    ``queries @ database.T`` + ``argpartition``."""
    sims = np.empty((queries.shape[0], k), np.float32)
    ids = np.empty((queries.shape[0], k), np.int64)
    for start in range(0, queries.shape[0], block):
        tile = queries[start : start + block] @ database.T
        part = np.argpartition(-tile, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(tile, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        sims[start : start + block] = np.take_along_axis(part_sims, order, axis=1)
        ids[start : start + block] = np.take_along_axis(part, order, axis=1)
    return sims, ids


def _numpy_both_ways(
    src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback
) -> KnnResult:
    return (*numpy_topk(src, tgt, min(k, len(tgt))), *numpy_topk(tgt, src, min(k, len(src))))


def _faiss_cpu_both_ways(
    src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback
) -> KnnResult:
    from xretrieve.knn import knn_both_ways

    return knn_both_ways(src, tgt, k, device="cpu", progress=progress)


def _chunk_engine(device: str, kernel_name: str | None, gpu_memory: int | None) -> KnnMethod:
    """xretrieve's chunk-maxima engine on ``device``: fp32 products on the CPU (emulating fp16
    there only costs time), fp16 on a GPU with the named kernel (None: as ``knn_both_ways``
    chooses)."""

    def search(src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback) -> KnnResult:
        from xretrieve.chunk_search import Kernel, Precision, chunk_knn_both_ways, plan_search
        from xretrieve.knn import default_gpu_memory, knn_both_ways
        from xretrieve.row_blocks import RowMatrix

        if device == "cuda" and kernel_name is None:
            return knn_both_ways(
                src, tgt, k, device="cuda", gpu_memory=gpu_memory, progress=progress
            )
        on_gpu = device == "cuda"
        budget = gpu_memory if gpu_memory is not None else (
            default_gpu_memory(device) if on_gpu else 1 << 30
        )  # fmt: skip
        plan = plan_search(
            len(src), len(tgt), src.shape[1], k, device=device, memory_budget=budget,
            precision=Precision.FP16 if on_gpu else Precision.FP32,
            kernel=Kernel(kernel_name or "torch"),
        )  # fmt: skip
        return chunk_knn_both_ways(
            RowMatrix(src), RowMatrix(tgt), min(k, len(tgt)), min(k, len(src)), plan,
            normalize=False, progress=progress,
        )  # fmt: skip

    return search


def _torch_loop_cuda(
    src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback
) -> KnnResult:
    """Peer: the bare torch fp16 loop a user would write, one product and a row ``topk`` per
    query block and direction (not exact: fp16 similarities choose and report)."""
    import torch

    x = torch.from_numpy(src).cuda().half()
    y = torch.from_numpy(tgt).cuda().half()

    def one_way(queries: torch.Tensor, database: torch.Tensor, kk: int):
        sims, ids = [], []
        for start in range(0, len(queries), 16384):
            top = (queries[start : start + 16384] @ database.T).topk(kk, dim=1)
            sims.append(top.values.float())
            ids.append(top.indices)
        return torch.cat(sims).cpu().numpy(), torch.cat(ids).cpu().numpy()

    with torch.inference_mode():
        return (*one_way(x, y, min(k, len(tgt))), *one_way(y, x, min(k, len(src))))


def _faiss_gpu_both_ways(
    src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback
) -> KnnResult:
    """Peer: FAISS GPU flat search (``GpuIndexFlatIP``, fp32) per direction."""
    import faiss

    resources = faiss.StandardGpuResources()
    found = []
    for queries, database in ((src, tgt), (tgt, src)):
        index = faiss.GpuIndexFlatIP(resources, database.shape[1])
        index.add(np.ascontiguousarray(database, dtype=np.float32))
        sims, ids = index.search(
            np.ascontiguousarray(queries, dtype=np.float32), min(k, len(database))
        )
        found += [sims, ids]
        del index
    return tuple(found)


def _semantic_search_both_ways(
    src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback
) -> KnnResult:
    """Peer: sentence-transformers' ``util.semantic_search`` (torch, on the GPU when there is
    one) per direction, its list of dicts turned into arrays."""
    import torch
    from sentence_transformers import util

    device = "cuda" if torch_cuda_available() else "cpu"
    x, y = torch.from_numpy(src).to(device), torch.from_numpy(tgt).to(device)
    found = []
    for queries, database in ((x, y), (y, x)):
        kk = min(k, len(database))
        hits = util.semantic_search(queries, database, top_k=kk)
        found.append(np.array([[hit["score"] for hit in row] for row in hits], np.float32))
        found.append(np.array([[hit["corpus_id"] for hit in row] for row in hits], np.int64))
    return tuple(found)


def _sentence_transformers_installed() -> bool:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def knn_methods(
    include_numpy: bool = True, gpu_memory: int | None = None, include_peers: bool = True
) -> dict[str, KnnMethod]:
    """The kNN-both-ways methods usable here, in run order: ``numpy`` (brute-force peer,
    optional), ``faiss_cpu`` (``mine(device="cpu")``'s search), ``torch_cpu`` (the chunk engine
    in fp32 on the CPU); where torch sees a GPU ``torch_cuda`` (``mine(device="cuda")``'s
    search under ``gpu_memory``), ``torch_cuda_torch_kernel`` (the same with the unfused torch
    reduction, when Triton is there to compare with) and the peers ``torch_loop_cuda``;
    ``faiss_gpu`` if ``faiss.get_num_gpus() > 0``; ``semantic_search`` if sentence-transformers
    is installed. ``include_peers=False`` keeps xretrieve's own methods only."""
    import faiss

    found: dict[str, KnnMethod] = {}
    if include_numpy:
        found["numpy"] = _numpy_both_ways
    if include_peers:
        found["faiss_cpu"] = _faiss_cpu_both_ways
    found["torch_cpu"] = _chunk_engine("cpu", None, None)
    if torch_cuda_available():
        from xretrieve.chunk_maxima import triton_available

        found["torch_cuda"] = _chunk_engine("cuda", None, gpu_memory)
        if triton_available():
            found["torch_cuda_torch_kernel"] = _chunk_engine("cuda", "torch", gpu_memory)
        if include_peers:
            found["torch_loop_cuda"] = _torch_loop_cuda
    if include_peers and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        found["faiss_gpu"] = _faiss_gpu_both_ways
    if include_peers and _sentence_transformers_installed():
        found["semantic_search"] = _semantic_search_both_ways
    return found


@dataclass(frozen=True)
class KnnMarginResult:
    """One method's median over ``runs`` (seconds each) of kNN both ways + ratio margin + max
    selection; ``phases`` the median seconds of each stage the method reported (xretrieve's
    engine: candidates, forward and backward re-scoring) plus ``margin``; ``pairs`` mined, the
    fraction of the reference method's pairs it also mined, ``exact_neighbours`` the fraction
    of its k-nearest ids equal to the reference's (1.0 for an exact search apart from ties),
    and the peak GPU memory it allocated (None without a GPU)."""

    method: str
    seconds: float
    knn_seconds: float
    margin_seconds: float
    runs: tuple[float, ...]
    pairs: int
    pair_agreement: float
    exact_neighbours: float
    phases: dict[str, float]
    peak_gpu_mb: float | None


class _PhaseClock:
    """A progress callback timing the stages a search reports, each from its first report to
    the next stage's (CUDA synchronised at every change, so device work is charged to the
    stage that queued it)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.stage: str | None = None
        self.started = 0.0
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.started = stage, time.perf_counter()

    def close(self) -> None:
        if self.stage is not None:
            if self.cuda:
                _synchronize("cuda")
            elapsed = time.perf_counter() - self.started
            self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + elapsed
            self.stage = None


def _mine_with(
    search: KnnMethod, src: np.ndarray, tgt: np.ndarray, k: int
) -> tuple[set[tuple[int, int]], KnnResult, float, float, dict[str, float]]:
    from xretrieve.margin import Margin, Mode, select_pairs

    cuda = torch_cuda_available()
    clock = _PhaseClock(cuda)
    if cuda:
        _synchronize("cuda")
    start = time.perf_counter()
    neighbours = search(src, tgt, k, clock)
    clock.close()
    knn_done = time.perf_counter()
    pairs = select_pairs(*neighbours, Margin.RATIO, Mode.MAX)
    end = time.perf_counter()
    clock.seconds["margin"] = end - knn_done
    mined = set(zip(pairs.src_index.tolist(), pairs.tgt_index.tolist(), strict=True))
    return mined, neighbours, end - start, knn_done - start, clock.seconds


def _peak_gpu_reset() -> None:
    if torch_cuda_available():
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gpu_mb() -> float | None:
    if not torch_cuda_available():
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def _same_ids(got: KnnResult, want: KnnResult) -> float:
    equal = sum(int((g == w).sum()) for g, w in ((got[1], want[1]), (got[3], want[3])))
    return equal / max(1, want[1].size + want[3].size)


def bench_knn_margin(
    src: np.ndarray,
    tgt: np.ndarray,
    k: int,
    methods: dict[str, KnnMethod],
    *,
    repeats: int = 1,
    progress: ProgressCallback | None = None,
) -> dict[str, KnnMarginResult]:
    """Time each of ``methods`` on L2-normalised ``src`` (n, d) / ``tgt`` (m, d) float32 after a
    warm-up on 256 rows (CUDA context, thread pools, kernel compilation). Pair and neighbour
    agreement are against the first method. Progress: stage "knn + margin", done = methods
    finished."""
    if repeats < 1 or k < 1:
        raise XRetrieveError("need at least one repeat and k >= 1 to benchmark")
    progress = progress or no_progress
    results: dict[str, KnnMarginResult] = {}
    reference: tuple[set[tuple[int, int]], KnnResult] | None = None
    progress("knn + margin", 0, len(methods))
    for done, (name, search) in enumerate(methods.items(), start=1):
        _mine_with(search, src[:256], tgt[:256], k)
        _peak_gpu_reset()
        totals, knn_times, phase_runs = [], [], []
        for _ in range(repeats):
            mined, neighbours, total, knn_time, phases = _mine_with(search, src, tgt, k)
            totals.append(total)
            knn_times.append(knn_time)
            phase_runs.append(phases)
        if reference is None:
            reference = (mined, neighbours)
        seconds, knn_seconds = statistics.median(totals), statistics.median(knn_times)
        results[name] = KnnMarginResult(
            method=name,
            seconds=seconds,
            knn_seconds=knn_seconds,
            margin_seconds=seconds - knn_seconds,
            runs=tuple(totals),
            pairs=len(mined),
            pair_agreement=len(mined & reference[0]) / max(len(reference[0]), 1),
            exact_neighbours=_same_ids(neighbours, reference[1]),
            phases={
                stage: statistics.median(run.get(stage, 0.0) for run in phase_runs)
                for stage in phase_runs[0]
            },
            peak_gpu_mb=_peak_gpu_mb(),
        )
        del neighbours
        progress("knn + margin", done, len(methods))
    return results


def speedups(results: dict[str, KnnMarginResult], baseline: str) -> dict[str, float | None]:
    """``baseline``'s seconds / each method's seconds (None when the baseline did not run)."""
    base = results[baseline].seconds if baseline in results else None
    return {
        name: (base / r.seconds if base and r.seconds > 0 else None) for name, r in results.items()
    }


# ---------------------------------------------------------------------------------------------
# One combined run (what `xretrieve bench` shows)


@dataclass(frozen=True)
class BenchConfig:
    """``xretrieve bench``: every ``backends`` x ``dtypes`` x ``batch_tokens`` embedding setting
    on ``texts``, then kNN + margin on ``knn_size`` x ``knn_size`` random rows of the model's
    dimension (0 skips it) with FAISS CPU, torch CPU and the GPU methods where a GPU exists."""

    model: str | Path | None
    texts: tuple[str, ...]
    corpus: Path | None = None
    backends: tuple[Backend, ...] = tuple(Backend)
    dtypes: tuple[str, ...] = ("fp32",)
    batch_tokens: tuple[int, ...] = (16384,)
    device: Device = Device.AUTO
    repeats: int = 1
    knn_size: int = 10000
    k: int = 4
    seed: int = 0
    # Prepended to every text (None: the model's own prefix).
    text_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", tuple(map(parse_backend, self.backends)))
        object.__setattr__(self, "device", parse_device(self.device))


@dataclass(frozen=True)
class BenchReport:
    """Results of a ``BenchConfig``: embedding results (or one error line per failed setting),
    kNN + margin results, and the model's dimension."""

    config: BenchConfig
    machine: dict[str, Any]
    dim: int | None
    embedding: tuple[EmbedResult, ...]
    embedding_errors: tuple[tuple[EmbedSetting, str], ...]
    knn: dict[str, KnnMarginResult]


def run_bench(config: BenchConfig, progress: ProgressCallback | None = None) -> BenchReport:
    """Run every embedding setting of ``config`` (a setting that fails, e.g. a dtype the
    backend cannot run here, is recorded as an error and the others go on), then kNN + margin
    with the FAISS CPU peer first."""
    machine = machine_info()
    embedded: list[EmbedResult] = []
    errors: list[tuple[EmbedSetting, str]] = []
    for backend in config.backends:
        for dtype in config.dtypes:
            for batch_tokens in config.batch_tokens:
                setting = EmbedSetting(backend, dtype, config.device, batch_tokens, config.repeats)
                try:
                    embedded.append(
                        bench_embedding(
                            config.model,
                            setting,
                            config.texts,
                            text_prefix=config.text_prefix,
                            progress=progress,
                        )
                    )
                except XRetrieveError:
                    raise
                except Exception as error:  # one failing setting must not lose the others
                    logger.warning("benchmark %s failed: %s", setting, error)
                    errors.append((setting, f"{type(error).__name__}: {error}"))
    dim = embedded[0].dim if embedded else _model_dim(config.model)
    knn: dict[str, KnnMarginResult] = {}
    if config.knn_size > 0:
        src, tgt = make_knn_data(config.knn_size, config.knn_size, dim, config.seed)
        methods = knn_methods(include_numpy=False)
        knn = bench_knn_margin(
            src, tgt, config.k, methods, repeats=config.repeats, progress=progress
        )
    return BenchReport(config, machine, dim, tuple(embedded), tuple(errors), knn)


def _model_dim(model: str | Path | None) -> int:
    from exporters import read_checkpoint_config
    from xretrieve.encoding.load import resolve_model

    source = resolve_model(model)
    if source.kind is SourceKind.EXPORT:
        from exporters import read_manifest

        return int(read_manifest(source.path).dim)
    return int(read_checkpoint_config(source.path)["hidden_size"])


def _rounded(values: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {
        key: round(value, digits) if isinstance(value, float) else value
        for key, value in values.items()
    }


def embed_result_dict(result: EmbedResult) -> dict[str, Any]:
    """JSON-ready dict of one ``EmbedResult`` (floats rounded, settings as their values)."""
    values = asdict(result)
    values.update(backend=result.backend.value, device=result.device.value)
    return _rounded(values)


def report_dict(report: BenchReport) -> dict[str, Any]:
    """JSON-ready ``xretrieve bench`` output: keys ``model``, ``machine``, ``workload``,
    ``embedding`` (one dict per setting, with ``speedup_vs_torch_same_dtype`` where a torch
    run of the same dtype and batch_tokens exists), ``embedding_errors``, ``knn``
    (``rows``, ``dim``, ``k``, ``results``: one dict per method with ``speedup_vs_faiss_cpu``)."""
    config = report.config
    embedding = [embed_result_dict(result) for result in report.embedding]
    torch_rates = {
        (r.dtype, r.batch_tokens): r.sentences_per_s
        for r in report.embedding
        if r.backend is Backend.TORCH
    }
    for entry, result in zip(embedding, report.embedding, strict=True):
        rate = torch_rates.get((result.dtype, result.batch_tokens))
        entry["speedup_vs_torch_same_dtype"] = (
            round(result.sentences_per_s / rate, 3) if rate else None
        )
    ratios = speedups(report.knn, "faiss_cpu")
    knn_results = []
    for name, result in report.knn.items():
        entry = _rounded(asdict(result))
        entry["runs"] = [round(run, 4) for run in result.runs]
        entry["speedup_vs_faiss_cpu"] = None if ratios[name] is None else round(ratios[name], 3)
        knn_results.append(entry)
    real = sum(r.real_tokens for r in report.embedding[:1])
    return {
        "model": "default" if config.model is None else str(config.model),
        "machine": report.machine,
        "workload": {
            "sentences": len(config.texts),
            "source": str(config.corpus) if config.corpus else "generated",
            "mean_tokens": round(real / len(config.texts), 2) if real else None,
            "repeats": config.repeats,
        },
        "embedding": embedding,
        "embedding_errors": [
            {
                "backend": s.backend.value,
                "dtype": s.dtype,
                "batch_tokens": s.batch_tokens,
                "error": e,
            }
            for s, e in report.embedding_errors
        ],
        "knn": {
            "task": "kNN both ways + ratio margin + max mode",
            "rows": config.knn_size,
            "dim": report.dim,
            "k": config.k,
            "results": knn_results,
        },
    }


def plot_report(report: BenchReport, path: Path) -> None:
    """Bar charts of embedding sentences/s per setting and kNN + margin seconds per method,
    written atomically as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xretrieve.files import atomic_write

    figure, (embed_axes, knn_axes) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r.backend.value} {r.dtype}\n{r.batch_tokens}" for r in report.embedding]
    embed_axes.bar(labels, [r.sentences_per_s for r in report.embedding], color="tab:blue")
    embed_axes.set_title(f"embedding ({len(report.config.texts)} sentences)")
    embed_axes.set_ylabel("sentences / s")
    knn_axes.bar(list(report.knn), [r.seconds for r in report.knn.values()], color="tab:orange")
    knn_axes.set_title(f"kNN + margin ({report.config.knn_size} x {report.config.knn_size})")
    knn_axes.set_ylabel("seconds (lower is better)")
    figure.tight_layout()
    try:
        with atomic_write(Path(path), "wb", encoding=None) as handle:
            figure.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(figure)
