"""The chunk-maxima engine (the GPU kNN path) on the CPU with emulated fp16/bf16 products."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xretrieve.core.row_blocks import RowMatrix
from xretrieve.knn.chunk_search import (
    ProductPrecision,
    chunk_knn_both_ways,
    chunk_maxima_torch,
    plan_search,
    product_error_bound,
)
from xretrieve.knn.exact import l2_normalize


def brute_force(queries: np.ndarray, database: np.ndarray, k: int):
    sims = queries.astype(np.float64) @ database.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def search(
    src, tgt, k_fwd, k_bwd, *, precision=ProductPrecision.FP16, normalize=False, **plan_args
):
    plan_args.setdefault("memory_budget", 1 << 30)
    plan = plan_search(
        src.shape[0], tgt.shape[0], src.shape[1], max(k_fwd, k_bwd), device="cpu",
        precision=precision, **plan_args,
    )  # fmt: skip
    return chunk_knn_both_ways(
        RowMatrix(src), RowMatrix(tgt), k_fwd, k_bwd, plan, normalize=normalize
    )


def assert_exact(got, src, tgt, k_fwd, k_bwd, *, fp32_ties: bool = False):
    """Ids equal to float64 brute force; with ``fp32_ties``, neighbours whose similarities
    differ by less than fp32 resolves may come in either order."""
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = got
    for queries, database, sims, ids, k in (
        (src, tgt, fwd_sims, fwd_ids, k_fwd),
        (tgt, src, bwd_sims, bwd_ids, k_bwd),
    ):
        want_sims, want_ids = brute_force(queries, database, k)
        assert sims.dtype == np.float32 and ids.dtype == np.int64
        np.testing.assert_allclose(sims, want_sims, rtol=1e-6, atol=2e-6)
        if fp32_ties:
            all_sims = queries.astype(np.float64) @ database.astype(np.float64).T
            found = np.take_along_axis(all_sims, ids, axis=1)
            np.testing.assert_allclose(found, want_sims, rtol=0, atol=1e-6)
            assert (np.sort(ids, axis=1) == np.sort(want_ids, axis=1)).mean() > 0.95
        else:
            np.testing.assert_array_equal(ids, want_ids)


def rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, dim)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return rows(rng, 333, 48), rows(rng, 290, 48)


@pytest.mark.parametrize("precision", list(ProductPrecision))
@pytest.mark.parametrize(
    ("chunk", "block_rows", "k_fwd", "k_bwd"),
    [
        (16, None, 4, 4),  # everything resident, one tile
        (8, 64, 4, 4),  # streaming blocks, last blocks and chunks partial
        (4, 20, 5, 3),  # blocks of 20 rows rounded down to 16
        (32, None, 10, 1),  # fewer chunks than kept: every chunk is a candidate
        (1, 50, 3, 3),  # chunks of one row: a plain top-k
    ],
)
def test_matches_brute_force(data, precision, chunk, block_rows, k_fwd, k_bwd) -> None:
    src, tgt = data
    got = search(src, tgt, k_fwd, k_bwd, precision=precision, chunk=chunk, block_rows=block_rows)
    assert_exact(got, src, tgt, k_fwd, k_bwd)


def test_result_does_not_depend_on_blocks(data) -> None:
    src, tgt = data
    first = search(src, tgt, 4, 4)
    for block_rows in (32, 96, 160):
        got = search(src, tgt, 4, 4, block_rows=block_rows)
        np.testing.assert_array_equal(got[1], first[1])
        np.testing.assert_array_equal(got[3], first[3])
        # The same fp32 dot products, summed by differently batched BLAS calls.
        np.testing.assert_allclose(got[0], first[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[2], first[2], rtol=0, atol=1e-6)


def test_tiny_memory_budget_streams(data) -> None:
    src, tgt = data
    plan = plan_search(333, 290, 48, 4, device="cpu", memory_budget=100_000,
                       precision=ProductPrecision.FP16, chunk=8)  # fmt: skip
    assert not plan.cache_blocks and plan.query_block < 333 and plan.database_block < 290
    assert_exact(search(src, tgt, 4, 4, memory_budget=100_000, chunk=8), src, tgt, 4, 4)


def test_unnormalized_inputs_and_normalize_flag(data) -> None:
    src, tgt = data
    scale = np.random.default_rng(3).uniform(0.5, 4, size=(src.shape[0], 1)).astype(np.float32)
    assert_exact(search(src * scale, tgt, 4, 4), src * scale, tgt, 4, 4)
    assert_exact(search(src * scale, tgt, 4, 4, normalize=True), src, tgt, 4, 4)


def test_forward_only(data) -> None:
    src, tgt = data
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = search(src, tgt, 3, 0)
    np.testing.assert_array_equal(fwd_ids, brute_force(src, tgt, 3)[1])
    assert bwd_sims.shape == (290, 0) and bwd_ids.shape == (290, 0)


def near_duplicates(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Queries whose neighbours are groups of near-copies about 1e-4 apart: fp16 products
    (resolution about 5e-4 near 1) cannot order them, fp32 can."""
    rng = np.random.default_rng(seed)
    centres = rows(rng, 40, 64)
    tgt = l2_normalize(np.repeat(centres, 12, axis=0) + 1e-4 * rng.standard_normal((480, 64)))
    src = l2_normalize(centres[rng.integers(0, 40, 200)] + 0.05 * rng.standard_normal((200, 64)))
    return src.astype(np.float32), tgt.astype(np.float32)


def test_near_duplicates_defeat_fp16_selection_but_not_the_engine() -> None:
    src, tgt = near_duplicates()
    want_ids = brute_force(src, tgt, 4)[1]
    # What the old GPU path did: top k of the fp16 products, then an fp32 re-sort of those k.
    fp16_products = torch.from_numpy(src).half().float() @ torch.from_numpy(tgt).half().float().T
    chosen = fp16_products.half().float().topk(4, dim=1).indices.numpy()
    refined = np.sort(chosen, axis=1)
    assert (refined != np.sort(want_ids, axis=1)).any(axis=1).mean() > 0.2
    for chunk in (1, 4, 16):
        assert_exact(search(src, tgt, 4, 4, chunk=chunk), src, tgt, 4, 4, fp32_ties=True)


def test_error_bound_holds_for_emulated_fp16() -> None:
    rng = np.random.default_rng(11)
    for dim in (8, 256, 1024):
        a, b = rows(rng, 64, dim), rows(rng, 64, dim)
        a[:4] *= 1e-3  # some tiny entries, to reach the subnormal range
        exact = a.astype(np.float64) @ b.astype(np.float64).T
        at, bt = torch.from_numpy(a).half().float(), torch.from_numpy(b).half().float()
        computed = (at @ bt.T).half().double().numpy()
        bound = product_error_bound(ProductPrecision.FP16, dim, 1.0, 1.0)
        assert np.abs(computed - exact).max() <= bound
        assert bound < 5e-3


def test_chunk_maxima_torch_pads_partial_chunks() -> None:
    rng = np.random.default_rng(2)
    a, b = torch.from_numpy(rows(rng, 10, 8)), torch.from_numpy(rows(rng, 7, 8))
    fwd, bwd = chunk_maxima_torch(a, b, 4, ProductPrecision.FP32)
    tile = a @ b.T
    assert fwd.shape == (10, 2) and bwd.shape == (3, 7)
    torch.testing.assert_close(fwd[:, 1], tile[:, 4:].amax(dim=1))
    torch.testing.assert_close(bwd[2], tile[8:].amax(dim=0))


def test_fp16_overflow_risk_falls_back_to_fp32(data) -> None:
    src, tgt = data
    big_src, big_tgt = src * 300, tgt * 300  # products up to 9e4 > fp16's 65504
    assert_exact(search(big_src, big_tgt, 4, 4), big_src, big_tgt, 4, 4)


def test_plan_streams_when_sides_do_not_fit() -> None:
    plan = plan_search(4_000_000, 4_000_000, 1024, 4, device="cuda", memory_budget=16 << 30,
                       precision=ProductPrecision.FP16)  # fmt: skip
    assert not plan.cache_blocks
    assert plan.query_block % plan.chunk == 0 and plan.tile_rows % plan.chunk == 0
    resident = 2 * plan.query_block * 1024 * 4
    assert resident + plan.tile_rows * plan.database_block * 6 < 16 << 30
    plan = plan_search(400_000, 400_000, 1024, 4, device="cuda", memory_budget=100 << 30,
                       precision=ProductPrecision.FP16)  # fmt: skip
    assert plan.cache_blocks and plan.query_block == 400_000


TRITON_CHECK = textwrap.dedent(
    """
    import numpy as np, torch
    from xretrieve.knn.chunk_maxima import chunk_maxima_triton
    from xretrieve.knn.chunk_search import Kernel, ProductPrecision, chunk_maxima_torch
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((70, 40)).astype(np.float32)).half().float()
    b = torch.from_numpy(rng.standard_normal((90, 40)).astype(np.float32)).half().float()
    got = chunk_maxima_triton(a, b, 8, block_m=32, block_n=32, block_k=16)
    want = chunk_maxima_torch(a, b, 8, ProductPrecision.FP32)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
    print("ok")
    """
)


def test_triton_kernel_in_interpreter() -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_engine_with_triton_kernel_in_interpreter() -> None:
    pytest.importorskip("triton")
    script = textwrap.dedent(
        """
        import numpy as np
        import xretrieve.knn.chunk_maxima as kernel
        from xretrieve.knn.chunk_search import Kernel, ProductPrecision, chunk_knn_both_ways, plan_search
        from xretrieve.knn.exact import knn_both_ways, l2_normalize
        from xretrieve.core.row_blocks import RowMatrix
        kernel.BLOCK_M = kernel.BLOCK_N = 32
        kernel.BLOCK_K = 16
        rng = np.random.default_rng(1)
        src = l2_normalize(rng.standard_normal((100, 24)))
        tgt = l2_normalize(rng.standard_normal((75, 24)))
        plan = plan_search(100, 75, 24, 3, device="cpu", memory_budget=1 << 28,
                           precision=ProductPrecision.FP16, kernel=Kernel.TRITON, chunk=8)
        got = chunk_knn_both_ways(RowMatrix(src), RowMatrix(tgt), 3, 3, plan, normalize=False)
        want = knn_both_ways(src, tgt, 3, device="cpu")
        for g, w in zip(got[1::2], want[1::2]):
            assert (g == w).all()
        print("ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_triton_self_check_failure_falls_back_to_torch(monkeypatch, caplog) -> None:
    """A kernel that fails (here: raises) is reported once and the torch reduction is used."""
    import xretrieve.knn.chunk_maxima as kernel

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler for this device")

    monkeypatch.setattr(kernel, "chunk_maxima_triton", broken)
    kernel.triton_kernel_works.cache_clear()
    with caplog.at_level("WARNING"):
        assert kernel.triton_kernel_works("cpu", 32) is False
    assert "using torch" in caplog.text
    kernel.triton_kernel_works.cache_clear()


def test_triton_self_check_catches_wrong_maxima(monkeypatch) -> None:
    import xretrieve.knn.chunk_maxima as kernel

    def off_by_a_little(queries, database, chunk, **kwargs):
        fwd, bwd = chunk_maxima_torch(
            queries.float(), database.float(), chunk, ProductPrecision.FP32
        )
        return fwd + 0.05, bwd

    monkeypatch.setattr(kernel, "chunk_maxima_triton", off_by_a_little)
    kernel.triton_kernel_works.cache_clear()
    assert kernel.triton_kernel_works("cpu", 32) is False
    kernel.triton_kernel_works.cache_clear()
