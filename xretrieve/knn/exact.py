"""Exact inner-product k-nearest-neighbour search, one way (``knn``) or both ways (``knn_both_ways``).

Inputs are ``np.ndarray`` matrices, memory maps (``np.load(..., mmap_mode="r")``) or
``RowMatrix`` row selections, float16/float32 alike; they are read block by block, so a search
over files larger than memory keeps only its blocks resident. Backends, chosen by ``device``:

- ``"cpu"``: FAISS exact search (``faiss.knn``, BLAS), query blocks against database blocks
  merged in a ``faiss.ResultHeap``; with one database block (the usual case) this is exactly
  FAISS ``IndexFlatIP``.
- ``"cuda"`` with a CUDA build of torch: ``xretrieve.knn.chunk_search``, which computes every
  product tile once in fp16 for both directions, reduces it to chunk maxima (a fused Triton
  kernel when Triton works, else torch), re-scores the candidates in fp32 and proves each row's
  top k exact, searching the few unproven rows again in fp32. The result equals the fp32 exact
  search apart from exact ties. ``gpu_memory`` bounds the device memory it uses (default: 80 %
  of the free memory); blocks stream through when the data do not fit.
- ``"cuda"`` with a CPU-only torch but a GPU build of FAISS: ``faiss.knn_gpu`` per query block.
- ``"auto"``: ``"cuda"`` when torch or FAISS sees a GPU, else ``"cpu"``.

GPU-only FAISS functions are called only when ``faiss.get_num_gpus() > 0``.

``k`` larger than the database is clamped to the database size (LASER's ``min(y.shape[0], k)``).
"""

from __future__ import annotations

import enum
import logging
import os
import re
from collections.abc import Callable

import numpy as np

from xretrieve.core.devices import torch_cuda_available
from xretrieve.core.errors import MissingDependencyError, XRetrieveError
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.row_blocks import RowMatrix, Rows, as_row_matrix

logger = logging.getLogger(__name__)

# Rows of queries per FAISS CPU search call: bounds FAISS's (block, database) distance tiles.
CPU_BLOCK_ROWS = 16384
# Host memory for one database block on the CPU path, at most.
CPU_DATABASE_BYTES = 4 << 30
# Share of the free GPU memory a search takes when no budget is given.
GPU_MEMORY_SHARE = 0.8


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss-cpu", "exact kNN search") from None
    return faiss


def _faiss_num_gpus() -> int:
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


class SearchBackend(str, enum.Enum):
    """The engine a search runs on (see the module docstring)."""

    FAISS_CPU = "faiss-cpu"
    TORCH_CUDA = "torch-cuda"
    FAISS_GPU = "faiss-gpu"


_CUDA_DEVICE = re.compile(r"cuda(:[0-9]+)?")


def check_device(device: str) -> str:
    """``device`` as a plain string if it is auto, cpu, cuda or cuda:N (an encoder ``Device``
    member is taken by its value); ``XRetrieveError`` otherwise."""
    if isinstance(device, enum.Enum):
        device = device.value
    if device in ("auto", "cpu") or _CUDA_DEVICE.fullmatch(device):
        return device
    raise XRetrieveError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N")


def resolve_backend(device: str) -> SearchBackend:
    """The ``SearchBackend`` for ``device`` auto|cpu|cuda[:n] (see ``check_device``).

    Raises ``XRetrieveError`` when ``cuda`` is asked for and neither torch nor FAISS sees a GPU.
    """
    device = check_device(device)
    if device == "cpu":
        return SearchBackend.FAISS_CPU
    if torch_cuda_available():
        return SearchBackend.TORCH_CUDA
    if _faiss_num_gpus() > 0:
        return SearchBackend.FAISS_GPU
    if device == "auto":
        return SearchBackend.FAISS_CPU
    raise XRetrieveError(
        f"device {device!r} requested, but neither torch nor faiss sees a CUDA GPU"
    )


def _cuda_name(device: str) -> str:
    return "cuda" if device == "auto" else device


def _check_pair(queries: RowMatrix, database: RowMatrix, k: int) -> None:
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"dimensions differ: {queries.shape[1]} vs {database.shape[1]}")
    if database.shape[0] == 0 or queries.shape[0] == 0:
        raise ValueError("kNN search needs at least one query and one database row")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm as a new float32 array; all-zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def default_gpu_memory(device: str) -> int:
    """Bytes a search may take on ``device``: ``GPU_MEMORY_SHARE`` of its free memory."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free * GPU_MEMORY_SHARE)


def knn(
    queries: Rows,
    database: Rows,
    k: int,
    *,
    device: str = "auto",
    block_rows: int | None = None,
    normalize: bool = False,
    gpu_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product kNN of each query row among the database rows.

    ``queries`` (n, d) and ``database`` (m, d) float; with ``normalize`` both are L2-normalised
    first (cosine similarity). Returns ``sims`` (n, min(k, m)) float32, best first, and ``ids``
    (n, min(k, m)) int64 database rows. ``block_rows`` caps the rows per block (tests);
    ``gpu_memory`` the bytes of device memory on the GPU path.
    """
    fwd_sims, fwd_ids, _, _ = _search(
        queries, database, k, 0, device, block_rows, normalize, gpu_memory, progress
    )
    return fwd_sims, fwd_ids


def knn_both_ways(
    src: Rows,
    tgt: Rows,
    k: int,
    *,
    device: str = "auto",
    block_rows: int | None = None,
    normalize: bool = False,
    gpu_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward (each ``src`` row among ``tgt``) and backward (each ``tgt`` row among ``src``) kNN.

    Returns ``fwd_sims`` (n, min(k, m)) float32, ``fwd_ids`` (n, min(k, m)) int64 rows of ``tgt``,
    ``bwd_sims`` (m, min(k, n)) float32, ``bwd_ids`` (m, min(k, n)) int64 rows of ``src``; each
    best first. On the torch GPU path every product tile is computed once for both directions.
    """
    return _search(src, tgt, k, k, device, block_rows, normalize, gpu_memory, progress)


def _search(
    src: Rows,
    tgt: Rows,
    k: int,
    k_back: int,
    device: str,
    block_rows: int | None,
    normalize: bool,
    gpu_memory: int | None,
    progress: ProgressCallback | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    src, tgt = as_row_matrix(src), as_row_matrix(tgt)
    _check_pair(src, tgt, k)
    k_fwd, k_bwd = min(k, tgt.shape[0]), min(k_back, src.shape[0])
    progress = progress or no_progress
    device = check_device(device)
    backend = resolve_backend(device)
    logger.debug("kNN %s x %s, k=%d/%d, on %s", src.shape, tgt.shape, k_fwd, k_bwd, backend.value)
    if backend is SearchBackend.TORCH_CUDA:
        return _chunk_search_cuda(
            src, tgt, k_fwd, k_bwd, _cuda_name(device), block_rows, normalize, gpu_memory, progress
        )
    if backend is SearchBackend.FAISS_GPU:
        search = _faiss_gpu_knn
    else:
        search = _faiss_cpu_knn
    fwd_sims, fwd_ids = search(src, tgt, k_fwd, block_rows, normalize, progress, "kNN forward")
    if not k_bwd:
        return fwd_sims, fwd_ids, _empty_sims(tgt), _empty_ids(tgt)
    bwd_sims, bwd_ids = search(tgt, src, k_bwd, block_rows, normalize, progress, "kNN backward")
    return fwd_sims, fwd_ids, bwd_sims, bwd_ids


def _empty_sims(matrix: RowMatrix) -> np.ndarray:
    return np.empty((matrix.shape[0], 0), dtype=np.float32)


def _empty_ids(matrix: RowMatrix) -> np.ndarray:
    return np.empty((matrix.shape[0], 0), dtype=np.int64)


def _chunk_search_cuda(
    src: RowMatrix,
    tgt: RowMatrix,
    k_fwd: int,
    k_bwd: int,
    device: str,
    block_rows: int | None,
    normalize: bool,
    gpu_memory: int | None,
    progress: ProgressCallback,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from xretrieve.knn.chunk_maxima import triton_available, triton_kernel_works
    from xretrieve.knn.chunk_search import (
        DEFAULT_CHUNK,
        Kernel,
        ProductPrecision,
        chunk_knn_both_ways,
        plan_search,
    )

    fused = triton_available() and triton_kernel_works(device, DEFAULT_CHUNK)
    plan = plan_search(
        src.shape[0],
        tgt.shape[0],
        src.shape[1],
        max(k_fwd, k_bwd),
        device=device,
        memory_budget=gpu_memory if gpu_memory is not None else default_gpu_memory(device),
        precision=ProductPrecision.FP16,
        kernel=Kernel.TRITON if fused else Kernel.TORCH,
        block_rows=block_rows,
    )
    logger.debug("chunk search plan %s", plan)
    return chunk_knn_both_ways(src, tgt, k_fwd, k_bwd, plan, normalize=normalize, progress=progress)


def _normalized_block(matrix: RowMatrix, start: int, stop: int, normalize: bool) -> np.ndarray:
    block = matrix.block(start, stop)
    return l2_normalize(block) if normalize else block


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return CPU_DATABASE_BYTES


def _cpu_database_rows(database: RowMatrix, block_rows: int | None) -> int:
    """Database rows per block on the CPU: all of them when they fit in the smaller of
    ``CPU_DATABASE_BYTES`` and a quarter of the available memory."""
    budget = min(CPU_DATABASE_BYTES, _available_memory() // 4)
    rows = max(1, budget // (4 * database.shape[1]))
    return min(database.shape[0], rows, block_rows or rows)


def _faiss_cpu_knn(
    queries: RowMatrix,
    database: RowMatrix,
    k: int,
    block_rows: int | None,
    normalize: bool,
    progress: ProgressCallback,
    stage: str,
) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    m = database.shape[0]
    database_rows = _cpu_database_rows(database, block_rows)
    if database_rows >= m:
        resident = _normalized_block(database, 0, m, normalize)

        def search(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return faiss.knn(block, resident, k, faiss.METRIC_INNER_PRODUCT)

    else:

        def search(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            heap = faiss.ResultHeap(block.shape[0], k, keep_max=True)
            for d0 in range(0, m, database_rows):
                d1 = min(d0 + database_rows, m)
                part = _normalized_block(database, d0, d1, normalize)
                sims, ids = faiss.knn(block, part, min(k, d1 - d0), faiss.METRIC_INNER_PRODUCT)
                heap.add_result(sims, ids + d0)
            heap.finalize()
            return heap.D, heap.I

    return _blocked_queries(search, queries, k, block_rows, normalize, progress, stage)


def _faiss_gpu_knn(
    queries: RowMatrix,
    database: RowMatrix,
    k: int,
    block_rows: int | None,
    normalize: bool,
    progress: ProgressCallback,
    stage: str,
) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    if faiss.get_num_gpus() <= 0:  # never reach a GPU-only FAISS call without a GPU
        raise XRetrieveError("faiss sees no GPU")
    resources = faiss.StandardGpuResources()
    resident = _normalized_block(database, 0, database.shape[0], normalize)

    def search(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn_gpu(resources, block, resident, k, metric=faiss.METRIC_INNER_PRODUCT)

    return _blocked_queries(search, queries, k, block_rows, normalize, progress, stage)


def _blocked_queries(
    search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    queries: RowMatrix,
    k: int,
    block_rows: int | None,
    normalize: bool,
    progress: ProgressCallback,
    stage: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``search`` over consecutive query blocks (of ``block_rows``, default ``CPU_BLOCK_ROWS``),
    read and normalised one at a time, into ``(n, k)`` sims and ids."""
    n = queries.shape[0]
    query_rows = block_rows or CPU_BLOCK_ROWS
    sims = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    progress(stage, 0, n)
    for q0 in range(0, n, query_rows):
        q1 = min(q0 + query_rows, n)
        sims[q0:q1], ids[q0:q1] = search(_normalized_block(queries, q0, q1, normalize))
        progress(stage, q1, n)
    return sims, ids
