"""kNN + margin throughput: ``bench_knn_margin(src, tgt, k, methods)`` runs exact kNN both ways
and the ratio margin with ``max`` selection (``xretrieve.mining.margin.mine_rows``'s two steps,
timed apart) with each method of ``knn_methods()`` (numpy brute force, FAISS CPU, the chunk
engine on the CPU, and where a GPU exists the engine on it beside the peers: a bare torch fp16
loop, FAISS GPU flat, sentence-transformers' ``semantic_search``), with per-phase times and peak
GPU memory, and checks the mined pairs and the neighbours agree with the first method."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.bench.machine import _synchronize
from xretrieve.core.devices import torch_cuda_available
from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)


KnnResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


KnnMethod = Callable[[np.ndarray, np.ndarray, int, ProgressCallback], KnnResult]


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
    from xretrieve.knn.exact import knn_both_ways

    return knn_both_ways(src, tgt, k, device="cpu", progress=progress)


def _chunk_engine(device: str, kernel_name: str | None, gpu_memory: int | None) -> KnnMethod:
    """xretrieve's chunk-maxima engine on ``device``: fp32 products on the CPU (emulating fp16
    there only costs time), fp16 on a GPU with the named kernel (None: as ``knn_both_ways``
    chooses)."""

    def search(src: np.ndarray, tgt: np.ndarray, k: int, progress: ProgressCallback) -> KnnResult:
        from xretrieve.core.row_blocks import RowMatrix
        from xretrieve.knn.chunk_search import (
            Kernel,
            ProductPrecision,
            chunk_knn_both_ways,
            plan_search,
        )
        from xretrieve.knn.exact import default_gpu_memory, knn_both_ways

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
            precision=ProductPrecision.FP16 if on_gpu else ProductPrecision.FP32,
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
        from xretrieve.knn.chunk_maxima import triton_available

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
    from xretrieve.mining.margin import Margin, Mode, select_pairs

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
