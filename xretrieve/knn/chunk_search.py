"""Exact kNN both ways from reduced-precision chunk maxima: the GPU engine (it runs on the CPU too).

For queries ``x`` (n, d) and database rows ``y`` (m, d) the products ``x @ y.T`` are computed
once, tile by tile, in fp16 (or bf16) with fp32 accumulation. A tile is never searched with a
top-k; it is reduced to its maxima over chunks of ``C`` consecutive database rows (forward: one
maximum per query and column chunk) and over chunks of ``C`` consecutive query rows (backward:
one maximum per database row and row chunk). Each query keeps its ``k + spare`` best chunks and,
as the *cut*, the maximum of the best chunk it did not keep (likewise each database row for the
backward direction). ``product_error_bound`` gives ``b``: no reduced-precision product, and so
no chunk maximum, lies further than ``b`` from the exact value. Then:

1. **Re-scoring.** With ``a_k`` the k-th best kept chunk maximum, every chunk holding one of
   the true k best rows has a computed maximum of at least ``a_k - 2b`` (its true maximum is at
   least the k-th best similarity, which is at least ``a_k - b``). The rows of the kept chunks
   above ``a_k - 2b`` (usually about k chunks of C rows) are scored in fp32 from the fp32 rows,
   and the k best taken.
2. **Proof.** A chunk that was not kept holds no similarity above ``cut + b``. A query whose
   k-th re-scored similarity exceeds ``cut + b`` therefore provably has its exact top k.
3. **Fallback.** The few queries for which the proof fails (more than ``k + spare`` chunks
   within ``2b`` of each other: near-duplicates) are searched again in fp32 against the whole
   database.

So the result equals an fp32 exact search apart from exact ties, whatever the data, and the
reduced-precision products only decide which candidates are scored.

Memory: the rows are read from ``RowMatrix`` blocks (memory maps stream block by block) and
live on the device under ``memory_budget`` bytes: when both sides fit (reduced-precision and
fp32 copies) they are uploaded once; otherwise query blocks and database blocks stream through,
and the answer does not depend on the block sizes.
"""

from __future__ import annotations

import enum
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.row_blocks import RowMatrix
from xretrieve.knn.chunk_maxima import chunk_maxima_torch, chunk_maxima_triton
from xretrieve.knn.precision import ProductPrecision, product_error_bound, to_precision

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

logger = logging.getLogger(__name__)

# fp16 overflows at 65504: inputs whose products could exceed this are multiplied in fp32.
FP16_SAFE_PRODUCT = 3.0e4
DEFAULT_CHUNK = 32
DEFAULT_SPARE_CHUNKS = 8
# Fewest rows of a streamed block when the budget alone would allow fewer.
MIN_STREAM_ROWS = 256
# Shares of the memory budget: resident rows, one product tile, one re-scoring gather.
_ROWS_SHARE, _TILE_SHARE, _GATHER_SHARE = 0.55, 0.2, 0.1


class Kernel(enum.Enum):
    """How a product tile becomes chunk maxima: torch (product, then ``amax``) or one fused
    Triton kernel (``xretrieve.knn.chunk_maxima``), which never writes the tile."""

    TORCH = "torch"
    TRITON = "triton"


@dataclass(frozen=True)
class ChunkPlan:
    """How one search runs: ``device`` (torch device name), ``precision`` of the candidate
    products, ``kernel``, ``chunk`` rows per chunk, ``spare`` chunks kept beyond k,
    ``query_block`` / ``database_block`` rows resident at once (multiples of ``chunk``),
    ``tile_rows`` query rows per product tile (a multiple of ``chunk``), ``gather_pairs``
    (row, chunk) pairs re-scored at once, and whether uploaded blocks stay on the device
    (``cache_blocks``, when both sides fit)."""

    device: str
    precision: ProductPrecision
    kernel: Kernel
    chunk: int
    spare: int
    query_block: int
    database_block: int
    tile_rows: int
    gather_pairs: int
    cache_blocks: bool


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _round_down(value: int, multiple: int, floor: int) -> int:
    return max(floor, value // multiple * multiple)


def plan_search(
    n: int,
    m: int,
    dim: int,
    k: int,
    *,
    device: str,
    memory_budget: int,
    precision: ProductPrecision,
    kernel: Kernel = Kernel.TORCH,
    chunk: int = DEFAULT_CHUNK,
    spare: int = DEFAULT_SPARE_CHUNKS,
    block_rows: int | None = None,
) -> ChunkPlan:
    """Block sizes for ``n`` queries and ``m`` database rows of dimension ``dim`` under
    ``memory_budget`` bytes of device memory; ``block_rows`` caps both blocks (for tests)."""
    if chunk < 1 or spare < 0:
        raise ValueError(f"chunk must be >= 1 and spare >= 0, got {chunk} and {spare}")
    reduced_bytes = 4 if precision is ProductPrecision.FP32 else 2
    keep = k + spare + 1
    lists = (n + m) * keep * 12  # chunk maxima (float32) and chunk ids (int64)
    rows_budget = max(0, int(memory_budget * _ROWS_SHARE) - lists)
    scores_per_query = (keep - 1) * chunk * 4  # the re-scoring pass's (kept, chunk) scores
    both_sides = (n + m) * (dim * (reduced_bytes + 4) + scores_per_query)
    cache = both_sides <= rows_budget and block_rows is None
    if cache:
        query_block, database_block = _round_up(n, chunk), _round_up(m, chunk)
    else:
        # Streaming: one query block and one database block, fp32 in the re-scoring pass.
        side = rows_budget // (2 * dim * 4 + scores_per_query)
        if block_rows is not None:
            side = min(side, block_rows)
        else:  # a budget too small for the lists would crawl through tiny tiles: exceed it
            side = max(side, MIN_STREAM_ROWS)
        side = _round_down(side, chunk, chunk)
        query_block = min(side, _round_up(n, chunk))
        database_block = min(side, _round_up(m, chunk))
    tile_bytes_per_element = reduced_bytes + 8 / chunk + 4  # product, maxima, top-k scratch
    tile_elements = int(memory_budget * _TILE_SHARE / tile_bytes_per_element)
    tile_rows = _round_down(tile_elements // max(1, database_block), chunk, chunk)
    tile_rows = min(tile_rows, query_block)
    if block_rows is not None:
        tile_rows = min(tile_rows, _round_down(block_rows, chunk, chunk))
    gather_pairs = max(1, int(memory_budget * _GATHER_SHARE) // (chunk * dim * 4 * 2))
    return ChunkPlan(
        device=device,
        precision=precision,
        kernel=kernel,
        chunk=chunk,
        spare=spare,
        query_block=query_block,
        database_block=database_block,
        tile_rows=tile_rows,
        gather_pairs=gather_pairs,
        cache_blocks=cache,
    )


@contextmanager
def _exact_matmul() -> Iterator[None]:
    """fp32 products in fp32 (no TF32) and fp16 products accumulated in fp32 (no reduced
    precision reductions): the error bound assumes both."""
    import torch

    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, matmul.allow_fp16_reduced_precision_reduction)
    saved_bf16 = matmul.allow_bf16_reduced_precision_reduction
    matmul.allow_tf32 = False
    matmul.allow_fp16_reduced_precision_reduction = False
    matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        matmul.allow_tf32, matmul.allow_fp16_reduced_precision_reduction = saved
        matmul.allow_bf16_reduced_precision_reduction = saved_bf16


class _Uploader:
    """Blocks of a ``RowMatrix`` on the device, optionally normalised, in fp32 or reduced
    precision, padded with zero rows to a multiple of the chunk; kept for the whole search when
    the plan caches blocks."""

    def __init__(self, plan: ChunkPlan, normalize: bool) -> None:
        import torch

        self.plan = plan
        self.normalize = normalize
        self.device = torch.device(plan.device)
        self._cache: dict[tuple[int, int, int, bool], torch.Tensor] = {}
        self._fp32_cache: dict[tuple[int, int, int], torch.Tensor] = {}

    def fp32(self, matrix: RowMatrix, start: int, stop: int) -> torch.Tensor:
        key = (id(matrix), start, stop)
        if key in self._fp32_cache:
            return self._fp32_cache[key]
        import torch

        # The stored dtype travels (half the bytes for float16 files) without a host copy; the
        # device converts and normalises in place. Zero rows pad the block to whole chunks, so
        # that it views as (chunks, chunk, dim); a padded row's products are 0, which can only
        # raise a chunk maximum (safe for the proof), and re-scoring masks those rows out.
        rows, dim = stop - start, matrix.shape[1]
        block = torch.zeros((_round_up(rows, self.plan.chunk), dim), device=self.device)
        with matrix.native_rows(start, stop) as native, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            block[:rows].copy_(torch.from_numpy(native))
        if self.normalize:
            block.div_(block.norm(dim=1, keepdim=True).clamp_min_(1e-12))
        if self.plan.cache_blocks:
            self._fp32_cache[key] = block
        return block

    def reduced(self, matrix: RowMatrix, start: int, stop: int) -> torch.Tensor:
        """The block in the plan's precision: real fp16/bf16 on a GPU; on the CPU fp32 holding
        fp16/bf16-rounded values (the GPU's inputs, emulated)."""
        key = (id(matrix), start, stop, True)
        if key in self._cache:
            return self._cache[key]
        block = self.fp32(matrix, start, stop)
        block = to_precision(block, self.plan.precision)
        if self.plan.cache_blocks:
            self._cache[key] = block
        return block


def _chunk_maxima(
    queries: torch.Tensor, database: torch.Tensor, plan: ChunkPlan
) -> tuple[torch.Tensor, torch.Tensor]:
    if plan.kernel is Kernel.TRITON:
        return chunk_maxima_triton(queries, database, plan.chunk)
    return chunk_maxima_torch(queries, database, plan.chunk, plan.precision)


def _top(values: torch.Tensor, keep: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``keep`` largest values per row and their column + ``offset``; rows narrower than
    ``keep`` are padded with -inf and id -1."""
    import torch

    width = values.shape[1]
    best, ids = values.topk(min(keep, width), dim=1)
    ids = ids + offset
    if width < keep:
        pad = keep - width
        best = torch.nn.functional.pad(best, (0, pad), value=-math.inf)
        ids = torch.nn.functional.pad(ids, (0, pad), value=-1)
    return best, ids


def _merge(
    run_best: torch.Tensor, run_ids: torch.Tensor, best: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``keep`` best of two best-first lists of the same width."""
    import torch

    keep = run_best.shape[1]
    values = torch.cat((run_best, best), dim=1)
    merged, position = values.topk(keep, dim=1)
    return merged, torch.cat((run_ids, ids), dim=1).gather(1, position)


@dataclass
class _ChunkLists:
    """Per row: the best chunk maxima (rows, keep) float32, best first, and their chunk ids
    (rows, keep) int64 (-1 where a row has fewer chunks)."""

    best: torch.Tensor
    ids: torch.Tensor


def _candidate_chunks(
    src: RowMatrix,
    tgt: RowMatrix,
    keep_fwd: int,
    keep_bwd: int,
    plan: ChunkPlan,
    uploader: _Uploader,
    progress: ProgressCallback,
) -> tuple[_ChunkLists, _ChunkLists | None]:
    """Pass 1: every product tile once, reduced to chunk maxima, best chunks kept both ways."""
    import torch

    n, m = src.shape[0], tgt.shape[0]
    device = uploader.device
    fwd = _ChunkLists(
        torch.full((n, keep_fwd), -math.inf, device=device),
        torch.full((n, keep_fwd), -1, dtype=torch.int64, device=device),
    )
    bwd = None
    if keep_bwd:
        bwd = _ChunkLists(
            torch.full((m, keep_bwd), -math.inf, device=device),
            torch.full((m, keep_bwd), -1, dtype=torch.int64, device=device),
        )
    c = plan.chunk
    tiles_per_block = -(-plan.query_block // plan.tile_rows)
    n_tiles = -(-n // plan.query_block) * -(-m // plan.database_block) * tiles_per_block
    done = 0
    progress("kNN candidates", 0, n_tiles)
    for q0 in range(0, n, plan.query_block):
        q1 = min(q0 + plan.query_block, n)
        xq = uploader.reduced(src, q0, q1)
        for d0 in range(0, m, plan.database_block):
            d1 = min(d0 + plan.database_block, m)
            yd = uploader.reduced(tgt, d0, d1)
            for t0 in range(0, q1 - q0, plan.tile_rows):
                t1 = min(t0 + plan.tile_rows, q1 - q0)
                fwd_max, bwd_max = _chunk_maxima(xq[t0:t1], yd, plan)
                rows = slice(q0 + t0, q0 + t1)
                best, ids = _top(fwd_max, keep_fwd, d0 // c)
                fwd.best[rows], fwd.ids[rows] = _merge(fwd.best[rows], fwd.ids[rows], best, ids)
                if bwd is not None:
                    best, ids = _top(bwd_max[:, : d1 - d0].T, keep_bwd, (q0 + t0) // c)
                    cols = slice(d0, d1)
                    bwd.best[cols], bwd.ids[cols] = _merge(bwd.best[cols], bwd.ids[cols], best, ids)
                done += 1
                progress("kNN candidates", done, n_tiles)
    return fwd, bwd


@dataclass(frozen=True)
class _Pass:
    """What both directions' re-scoring share: the plan, the device blocks, the error bound
    ``margin`` and the progress callback."""

    plan: ChunkPlan
    uploader: _Uploader
    margin: float
    progress: ProgressCallback


def _rescore(
    queries: RowMatrix, database: RowMatrix, lists: _ChunkLists, k: int, run: _Pass, stage: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass 2 for one direction: fp32 scores of the rows of each query's kept chunks within
    ``2 * run.margin`` of its k-th best chunk maximum, the k best, and the queries whose proof
    fails (k-th score not above cut + ``run.margin``; see the module doc).

    Returns ``sims`` (nq, k) float32, ``ids`` (nq, k) int64 and ``failed`` (f,) int64 rows."""
    import torch

    plan, uploader, margin, progress = run.plan, run.uploader, run.margin, run.progress
    nq, m = queries.shape[0], database.shape[0]
    c = plan.chunk
    kept = lists.ids.shape[1] - 1
    chunks, cut = lists.ids[:, :kept], lists.best[:, kept]
    # Chunks below a_k - 2b cannot hold a true top-k row; leaving them out keeps the gathers
    # to about k chunks per query.
    needed = lists.best[:, :kept] >= (lists.best[:, k - 1] - 2 * margin)[:, None]
    offsets = torch.arange(c, device=uploader.device)
    sims = torch.empty((nq, k), device=uploader.device)
    ids = torch.empty((nq, k), dtype=torch.int64, device=uploader.device)
    failed = []
    progress(stage, 0, nq)
    for q0 in range(0, nq, plan.query_block):
        q1 = min(q0 + plan.query_block, nq)
        xq = uploader.fp32(queries, q0, q1)
        block_chunks = chunks[q0:q1]
        block_needed = needed[q0:q1]
        scores = torch.full((q1 - q0, kept, c), -math.inf, device=uploader.device)
        for d0 in range(0, m, plan.database_block):
            d1 = min(d0 + plan.database_block, m)
            slabs = uploader.fp32(database, d0, d1).view(-1, c, xq.shape[1])  # (chunks, c, dim)
            lo, hi = d0 // c, -(-d1 // c)
            inside = (block_chunks >= lo) & (block_chunks < hi) & block_needed
            rows, slots = torch.nonzero(inside, as_tuple=True)
            for p0 in range(0, rows.shape[0], plan.gather_pairs):
                r, s = rows[p0 : p0 + plan.gather_pairs], slots[p0 : p0 + plan.gather_pairs]
                local = block_chunks[r, s] - lo
                candidates = slabs.index_select(0, local)  # (p, c, dim): whole chunks, copied
                dots = torch.bmm(candidates, xq.index_select(0, r).unsqueeze(2)).squeeze(2)
                padding = local[:, None] * c + offsets >= d1 - d0
                scores[r, s] = dots.masked_fill_(padding, -math.inf)
        flat = scores.reshape(q1 - q0, kept * c)
        top, position = flat.topk(k, dim=1)
        sims[q0:q1] = top
        ids[q0:q1] = block_chunks.gather(1, position // c) * c + position % c
        proven = top[:, k - 1] > cut[q0:q1] + margin
        failed.append(torch.nonzero(~proven).flatten() + q0)
        progress(stage, q1, nq)
    return sims, ids, torch.cat(failed)


def _exact_rows(
    queries: RowMatrix,
    database: RowMatrix,
    k: int,
    plan: ChunkPlan,
    uploader: _Uploader,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain fp32 blocked search of every query against every database row (the fallback)."""
    import torch

    nq, m = queries.shape[0], database.shape[0]
    sims = torch.empty((nq, k), device=uploader.device)
    ids = torch.empty((nq, k), dtype=torch.int64, device=uploader.device)
    for q0 in range(0, nq, plan.tile_rows):
        q1 = min(q0 + plan.tile_rows, nq)
        xq = torch.from_numpy(queries.block(q0, q1)).to(uploader.device)
        if uploader.normalize:
            xq = torch.nn.functional.normalize(xq, dim=1)
        best = torch.full((q1 - q0, k), -math.inf, device=uploader.device)
        best_ids = torch.full((q1 - q0, k), -1, dtype=torch.int64, device=uploader.device)
        for d0 in range(0, m, plan.database_block):
            d1 = min(d0 + plan.database_block, m)
            block = uploader.fp32(database, d0, d1)[: d1 - d0]
            top, top_ids = _top(xq @ block.T, k, d0)
            best, best_ids = _merge(best, best_ids, top, top_ids)
        sims[q0:q1], ids[q0:q1] = best, best_ids
    return sims, ids


def _max_norm(matrix: RowMatrix, normalize: bool) -> float:
    if normalize:
        return 1.0 + 1e-6
    norm = 0.0
    for _, block in matrix.blocks():
        if block.size:
            norm = max(norm, float(np.sqrt(np.einsum("ij,ij->i", block, block).max())))
    return norm


def _direction(
    queries: RowMatrix, database: RowMatrix, lists: _ChunkLists, k: int, run: _Pass, stage: str
) -> tuple[np.ndarray, np.ndarray]:
    sims, ids, failed = _rescore(queries, database, lists, k, run, stage)
    if failed.numel():
        logger.info("%s: %d of %d rows searched again exactly", stage, failed.numel(), len(ids))
        rows = failed.cpu().numpy()
        exact_sims, exact_ids = _exact_rows(
            queries.select(rows), database, k, run.plan, run.uploader
        )
        sims[failed], ids[failed] = exact_sims, exact_ids
    return sims.cpu().numpy(), ids.cpu().numpy()


def chunk_knn_both_ways(
    src: RowMatrix,
    tgt: RowMatrix,
    k_fwd: int,
    k_bwd: int,
    plan: ChunkPlan,
    *,
    normalize: bool,
    progress: ProgressCallback = no_progress,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact kNN of ``src`` rows among ``tgt`` rows (``k_fwd``) and back (``k_bwd``, 0 skips it).

    ``k_fwd <= len(tgt)`` and ``k_bwd <= len(src)``. Returns ``fwd_sims`` (n, k_fwd) float32,
    ``fwd_ids`` (n, k_fwd) int64 rows of ``tgt``, ``bwd_sims`` (m, k_bwd), ``bwd_ids`` (m, k_bwd)
    rows of ``src``, best first (empty backward arrays when ``k_bwd`` is 0).
    """
    import torch

    dim = src.shape[1]
    norm_src, norm_tgt = _max_norm(src, normalize), _max_norm(tgt, normalize)
    if plan.precision is ProductPrecision.FP16 and norm_src * norm_tgt >= FP16_SAFE_PRODUCT:
        plan = _replace_precision(plan, ProductPrecision.FP32)
    margin = product_error_bound(plan.precision, dim, norm_src, norm_tgt)
    uploader = _Uploader(plan, normalize)
    keep_fwd = k_fwd + plan.spare + 1
    keep_bwd = k_bwd + plan.spare + 1 if k_bwd else 0
    with torch.inference_mode(), _exact_matmul():
        fwd_lists, bwd_lists = _candidate_chunks(
            src, tgt, keep_fwd, keep_bwd, plan, uploader, progress
        )
        forward = _Pass(plan, uploader, margin, progress)
        fwd_sims, fwd_ids = _direction(src, tgt, fwd_lists, k_fwd, forward, "kNN forward")
        del fwd_lists
        if bwd_lists is None:
            return (
                fwd_sims,
                fwd_ids,
                np.empty((tgt.shape[0], 0), np.float32),
                np.empty((tgt.shape[0], 0), np.int64),
            )
        backward = _Pass(_swap_blocks(plan), uploader, margin, progress)
        bwd_sims, bwd_ids = _direction(tgt, src, bwd_lists, k_bwd, backward, "kNN backward")
    return fwd_sims, fwd_ids, bwd_sims, bwd_ids


def _replace_precision(plan: ChunkPlan, precision: ProductPrecision) -> ChunkPlan:
    from dataclasses import replace

    logger.info("products could overflow fp16: candidates are computed in fp32")
    return replace(plan, precision=precision, kernel=Kernel.TORCH)


def _swap_blocks(plan: ChunkPlan) -> ChunkPlan:
    """The plan with query and database blocks exchanged, for the backward direction (so the
    cached blocks of pass 1 are found again)."""
    from dataclasses import replace

    return replace(plan, query_block=plan.database_block, database_block=plan.query_block)
