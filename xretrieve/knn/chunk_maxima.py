"""A product tile's chunk maxima: the torch reduction, and one Triton kernel that never writes
the tile to memory.

``chunk_maxima_triton(queries, database, chunk)`` equals ``chunk_maxima_torch``:
each program multiplies a ``BLOCK_M x BLOCK_N`` block of ``queries @ database.T`` with fp32
accumulation (tensor cores for fp16/bf16 inputs) and writes only its row-chunk and column-chunk
maxima: ``BLOCK_M * BLOCK_N / chunk`` values each way instead of ``BLOCK_M * BLOCK_N``. The
torch path writes the fp16 tile and reads it twice; this removes that traffic, which at
400k x 400k is comparable to the products themselves.

Triton ships with CUDA builds of torch. ``TRITON_INTERPRET=1`` (set before this module is
imported) runs the kernel on the CPU, which the tests use. Grouped program order (``GROUP_M``)
keeps a band of query blocks in L2 while the database blocks pass, as Triton's matmul tutorial.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING

from xretrieve.core.errors import MissingDependencyError
from xretrieve.knn.precision import ProductPrecision, product_error_bound, torch_dtype

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

BLOCK_M = 128
BLOCK_N = 128
BLOCK_K = 64
GROUP_M = 8
# Hopper-sized launch: two warpgroups per 128 x 128 block, three-stage software pipeline.
NUM_WARPS = 8
NUM_STAGES = 3


def chunk_maxima_torch(
    queries: torch.Tensor, database: torch.Tensor, chunk: int, precision: ProductPrecision
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fwd`` (q, ceil(m / chunk)): each query's maximum product over each chunk of database
    rows; ``bwd`` (ceil(q / chunk), m): each database row's maximum over each chunk of query
    rows. float32. On the CPU the product of fp16/bf16-valued inputs is rounded to that format,
    as a GPU's fp16 output is."""
    import torch

    tile = queries @ database.T
    if tile.device.type != "cuda" and precision is not ProductPrecision.FP32:
        tile = tile.to(torch_dtype(precision)).float()
    q, m = tile.shape
    pad_cols, pad_rows = (-m) % chunk, (-q) % chunk
    if pad_cols or pad_rows:
        tile = torch.nn.functional.pad(tile, (0, pad_cols, 0, pad_rows), value=-math.inf)
    fwd = tile[:q].reshape(q, -1, chunk).amax(dim=2)
    bwd = tile[:, :m].reshape(-1, chunk, m).amax(dim=1)
    return fwd.float(), bwd.float()


def triton_available() -> bool:
    """Whether Triton imports (it does not on CPU-only builds of torch without it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        raise MissingDependencyError("triton", "the fused chunk-maxima kernel") from None

    @triton.jit
    def chunk_max_kernel(
        a_ptr,
        b_ptr,
        fwd_ptr,
        bwd_ptr,
        M,
        N,
        K,
        stride_am,
        stride_bn,
        stride_fwd,
        stride_bwd,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        CHUNK: tl.constexpr,
        GROUP_M: tl.constexpr,
    ):
        pid = tl.program_id(0)
        blocks_m = tl.cdiv(M, BLOCK_M)
        blocks_n = tl.cdiv(N, BLOCK_N)
        in_group = GROUP_M * blocks_n
        first_m = (pid // in_group) * GROUP_M
        group_size = min(blocks_m - first_m, GROUP_M)
        pid_m = first_m + (pid % in_group) % group_size
        pid_n = (pid % in_group) // group_size

        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        inner = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + rows[:, None] * stride_am + inner[None, :]
        b_ptrs = b_ptr + cols[None, :] * stride_bn + inner[:, None]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, tl.cdiv(K, BLOCK_K)):
            left = K - k0 * BLOCK_K
            a = tl.load(a_ptrs, mask=(rows[:, None] < M) & (inner[None, :] < left), other=0.0)
            b = tl.load(b_ptrs, mask=(cols[None, :] < N) & (inner[:, None] < left), other=0.0)
            acc += tl.dot(a, b)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        acc = tl.where((rows[:, None] < M) & (cols[None, :] < N), acc, float("-inf"))

        fwd = tl.max(tl.reshape(acc, (BLOCK_M, BLOCK_N // CHUNK, CHUNK)), axis=2)
        fwd_cols = pid_n * (BLOCK_N // CHUNK) + tl.arange(0, BLOCK_N // CHUNK)
        fwd_mask = (rows[:, None] < M) & (fwd_cols[None, :] < tl.cdiv(N, CHUNK))
        tl.store(fwd_ptr + rows[:, None] * stride_fwd + fwd_cols[None, :], fwd, mask=fwd_mask)

        bwd = tl.max(tl.reshape(acc, (BLOCK_M // CHUNK, CHUNK, BLOCK_N)), axis=1)
        bwd_rows = pid_m * (BLOCK_M // CHUNK) + tl.arange(0, BLOCK_M // CHUNK)
        bwd_mask = (bwd_rows[:, None] < tl.cdiv(M, CHUNK)) & (cols[None, :] < N)
        tl.store(bwd_ptr + bwd_rows[:, None] * stride_bwd + cols[None, :], bwd, mask=bwd_mask)

    return triton, chunk_max_kernel


def chunk_maxima_triton(
    queries: torch.Tensor,
    database: torch.Tensor,
    chunk: int,
    *,
    block_m: int = BLOCK_M,
    block_n: int = BLOCK_N,
    block_k: int = BLOCK_K,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fwd`` (q, ceil(m / chunk)) and ``bwd`` (ceil(q / chunk), m) float32 chunk maxima of
    ``queries @ database.T`` for ``queries`` (q, d) and ``database`` (m, d) of one dtype.

    ``chunk`` must divide ``block_m`` and ``block_n`` (powers of two)."""
    import torch

    if block_m % chunk or block_n % chunk:
        raise ValueError(f"chunk {chunk} must divide the kernel blocks {block_m}x{block_n}")
    triton, kernel = _kernel()
    queries, database = queries.contiguous(), database.contiguous()
    q, d = queries.shape
    m = database.shape[0]
    fwd = torch.empty((q, math.ceil(m / chunk)), dtype=torch.float32, device=queries.device)
    bwd = torch.empty((math.ceil(q / chunk), m), dtype=torch.float32, device=queries.device)
    grid = (triton.cdiv(q, block_m) * triton.cdiv(m, block_n),)
    kernel[grid](
        queries,
        database,
        fwd,
        bwd,
        q,
        m,
        d,
        queries.stride(0),
        database.stride(0),
        fwd.stride(0),
        bwd.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        CHUNK=chunk,
        GROUP_M=GROUP_M,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    return fwd, bwd


@functools.cache
def triton_kernel_works(device: str, chunk: int) -> bool:
    """A one-off check on ``device`` that the kernel compiles and matches the torch reduction
    (within the fp16 product bound); False, with a warning, sends the search to the torch path."""
    import torch

    generator = torch.Generator().manual_seed(0)
    dim = 256
    a = torch.nn.functional.normalize(torch.randn(300, dim, generator=generator), dim=1)
    b = torch.nn.functional.normalize(torch.randn(260, dim, generator=generator), dim=1)
    a, b = a.to(device, torch.float16), b.to(device, torch.float16)
    try:
        got = chunk_maxima_triton(a, b, chunk)
    except Exception as error:  # a compiler failure must not end the search
        logger.warning("Triton chunk-maxima kernel unavailable (%s): using torch", error)
        return False
    want = chunk_maxima_torch(a, b, chunk, ProductPrecision.FP16)
    tolerance = 2 * product_error_bound(ProductPrecision.FP16, dim, 1.0, 1.0)
    worst = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
    if not worst <= tolerance:
        logger.warning("Triton chunk maxima differ from torch by %.3g: using torch", worst)
        return False
    return True
