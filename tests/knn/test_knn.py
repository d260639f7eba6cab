"""Exact kNN: FAISS CPU and the blocked torch path against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from xretrieve.core.errors import XRetrieveError
from xretrieve.knn.exact import (
    SearchBackend,
    check_device,
    knn,
    knn_both_ways,
    l2_normalize,
    resolve_backend,
)


def brute_force_knn(queries: np.ndarray, database: np.ndarray, k: int):
    sims = queries.astype(np.float64) @ database.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1).astype(np.float32), ids


def random_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, dim)))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return random_rows(rng, 301, 24), random_rows(rng, 257, 24)


def assert_same_knn(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]):
    got_sims, got_ids = got
    want_sims, want_ids = want
    assert got_sims.dtype == np.float32 and got_ids.dtype == np.int64
    assert got_sims.shape == want_sims.shape == got_ids.shape
    np.testing.assert_allclose(got_sims, want_sims, atol=1e-5)
    np.testing.assert_array_equal(got_ids, want_ids)


@pytest.mark.parametrize("block_rows", [None, 50, 1])
def test_faiss_cpu_knn_matches_brute_force(data, block_rows: int | None) -> None:
    queries, database = data
    got = knn(queries, database, 5, device="cpu", block_rows=block_rows)
    assert_same_knn(got, brute_force_knn(queries, database, 5))


def test_knn_both_ways_cpu(data) -> None:
    src, tgt = data
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = knn_both_ways(src, tgt, 4, device="cpu")
    assert_same_knn((fwd_sims, fwd_ids), brute_force_knn(src, tgt, 4))
    assert_same_knn((bwd_sims, bwd_ids), brute_force_knn(tgt, src, 4))


def test_normalize_flag_gives_cosine(data) -> None:
    src, tgt = data
    scale = np.random.default_rng(2).uniform(0.1, 10, size=(src.shape[0], 1)).astype(np.float32)
    got = knn(src * scale, tgt, 3, device="cpu", normalize=True)
    assert_same_knn(got, brute_force_knn(src, tgt, 3))


def test_k_is_clamped_to_database_size(data) -> None:
    src, tgt = data
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = knn_both_ways(src[:3], tgt, 10, device="cpu")
    assert fwd_ids.shape == (3, 10) and bwd_ids.shape == (tgt.shape[0], 3)
    assert_same_knn((bwd_sims, bwd_ids), brute_force_knn(tgt, src[:3], 3))


def test_chunk_engine_reports_progress(data) -> None:
    from xretrieve.core.row_blocks import RowMatrix
    from xretrieve.knn.chunk_search import ProductPrecision, chunk_knn_both_ways, plan_search

    src, tgt = data
    calls = []
    plan = plan_search(301, 257, 24, 2, device="cpu", memory_budget=1 << 30,
                       precision=ProductPrecision.FP16, chunk=4, block_rows=100)  # fmt: skip
    chunk_knn_both_ways(RowMatrix(src), RowMatrix(tgt), 2, 2, plan, normalize=True,
                        progress=lambda *args: calls.append(args))  # fmt: skip
    tiles = [call for call in calls if call[0] == "kNN candidates"]
    assert tiles[0] == ("kNN candidates", 0, 12) and tiles[-1] == ("kNN candidates", 12, 12)
    assert ("kNN forward", 301, 301) in calls and ("kNN backward", 257, 257) in calls


@pytest.mark.parametrize("block_rows", [None, 40, 7])
def test_cpu_streams_memory_maps_of_fp16_and_fp32(tmp_path, data, block_rows) -> None:
    """Memory-mapped inputs, float16 and float32, several database blocks merged in a heap."""
    src, tgt = data
    np.save(tmp_path / "src.npy", src.astype(np.float16))
    np.save(tmp_path / "tgt.npy", tgt)
    src_map = np.load(tmp_path / "src.npy", mmap_mode="r")
    tgt_map = np.load(tmp_path / "tgt.npy", mmap_mode="r")
    got = knn_both_ways(src_map, tgt_map, 4, device="cpu", block_rows=block_rows)
    src16 = src.astype(np.float16).astype(np.float32)
    assert_same_knn(got[:2], brute_force_knn(src16, tgt, 4))
    assert_same_knn(got[2:], brute_force_knn(tgt, src16, 4))


def test_row_selection_searches_only_selected_rows(data) -> None:
    from xretrieve.core.row_blocks import RowMatrix

    src, tgt = data
    rows = np.array([5, 0, 17, 200, 3])
    got = knn(RowMatrix(src).select(rows), tgt, 3, device="cpu", block_rows=2)
    assert_same_knn(got, brute_force_knn(src[rows], tgt, 3))


def test_bad_arguments(data) -> None:
    src, tgt = data
    with pytest.raises(ValueError, match="dimensions differ"):
        knn(src, tgt[:, :5], 2, device="cpu")
    with pytest.raises(ValueError, match="at least 1"):
        knn(src, tgt, 0, device="cpu")
    with pytest.raises(ValueError, match="at least one"):
        knn(src[:0], tgt, 1, device="cpu")
    with pytest.raises(XRetrieveError, match="unknown device"):
        resolve_backend("tpu")


def test_devices_are_checked_and_backends_are_members() -> None:
    from xretrieve.core.settings import Device

    assert check_device("cuda:1") == "cuda:1" and check_device(Device.CPU) == "cpu"
    assert type(check_device(Device.AUTO)) is str
    for bad in ("cudax", "cuda:", "gpu"):
        with pytest.raises(XRetrieveError, match=f"unknown device '{bad}': expected auto, cpu"):
            check_device(bad)
    assert resolve_backend("cpu") is SearchBackend.FAISS_CPU
    assert resolve_backend("auto") in tuple(SearchBackend)


def test_cpu_backend_and_cuda_without_gpu() -> None:
    from conftest import gpu_available

    assert resolve_backend("cpu") == "faiss-cpu"
    if gpu_available():
        assert resolve_backend("auto") == "torch-cuda"
    else:
        import faiss

        if faiss.get_num_gpus() == 0:
            assert resolve_backend("auto") == "faiss-cpu"
            with pytest.raises(XRetrieveError, match="no.* GPU|sees a CUDA GPU"):
                resolve_backend("cuda")


@pytest.mark.gpu
def test_gpu_both_ways_matches_faiss_cpu() -> None:
    rng = np.random.default_rng(3)
    src, tgt = random_rows(rng, 5000, 256), random_rows(rng, 4000, 256)
    want = knn_both_ways(src, tgt, 4, device="cpu")
    got = knn_both_ways(src, tgt, 4, device="cuda", block_rows=1024)
    for got_sims, want_sims in ((got[0], want[0]), (got[2], want[2])):
        np.testing.assert_allclose(got_sims, want_sims, atol=1e-5)
    # fp16 products may reorder neighbours closer than fp16 resolution.
    assert (got[1] == want[1]).mean() > 0.995 and (got[3] == want[3]).mean() > 0.995


@pytest.mark.gpu
def test_gpu_is_exact_on_near_duplicates_and_streams_under_a_small_budget() -> None:
    from test_chunk_search import near_duplicates

    src, tgt = near_duplicates()
    want = knn_both_ways(src, tgt, 4, device="cpu")
    for budget in (None, 2_000_000):
        got = knn_both_ways(src, tgt, 4, device="cuda", gpu_memory=budget)
        np.testing.assert_allclose(got[0], want[0], atol=1e-6)
        np.testing.assert_allclose(got[2], want[2], atol=1e-6)


@pytest.mark.gpu
def test_faiss_gpu_path_matches_faiss_cpu() -> None:
    import faiss

    from xretrieve.core.progress import no_progress
    from xretrieve.knn.exact import _faiss_gpu_knn

    if faiss.get_num_gpus() == 0:
        pytest.skip("faiss has no GPU support here")
    rng = np.random.default_rng(4)
    queries, database = random_rows(rng, 3000, 64), random_rows(rng, 2000, 64)
    got = _faiss_gpu_knn(queries, database, 4, 1000, no_progress, "kNN")
    want = knn(queries, database, 4, device="cpu")
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    assert (got[1] == want[1]).mean() > 0.995
