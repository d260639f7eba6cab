"""Exact kNN: FAISS CPU and the blocked torch path against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from xretrieve.errors import XRetrieveError
from xretrieve.knn import _torch_both_ways, knn, knn_both_ways, l2_normalize, resolve_backend


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


@pytest.mark.parametrize(
    ("n_src", "n_tgt", "k_fwd", "k_bwd", "block_queries", "block_database"),
    [
        (301, 257, 4, 4, 64, 50),
        (60, 47, 6, 3, 7, 5),  # k above a tile's width; last tiles narrower than k
        (301, 257, 1, 1, 301, 257),  # one tile
        (90, 100, 5, 2, 89, 3),
    ],
)
def test_torch_blocked_merge_matches_brute_force(
    data, n_src: int, n_tgt: int, k_fwd: int, k_bwd: int, block_queries: int, block_database: int
) -> None:
    """The GPU algorithm (tiles, running top-k merges both ways, fp32 refinement) run on CPU."""
    import torch

    src, tgt = data[0][:n_src], data[1][:n_tgt]
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = _torch_both_ways(
        src,
        tgt,
        k_fwd,
        k_bwd,
        "cpu",
        normalize=False,
        block_queries=block_queries,
        block_database=block_database,
        compute_dtype=torch.float32,
    )
    assert_same_knn((fwd_sims, fwd_ids), brute_force_knn(src, tgt, k_fwd))
    assert_same_knn((bwd_sims, bwd_ids), brute_force_knn(tgt, src, k_bwd))


def test_torch_path_reports_progress(data) -> None:
    import torch

    src, tgt = data
    calls = []
    _torch_both_ways(
        src, tgt, 2, 2, "cpu", normalize=True, block_queries=100, block_database=100,
        compute_dtype=torch.float32, progress=lambda *args: calls.append(args),
    )  # fmt: skip
    assert calls[0] == ("kNN tiles", 0, 12) and calls[-1] == ("kNN tiles", 12, 12)


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
def test_faiss_gpu_path_matches_faiss_cpu() -> None:
    import faiss

    from xretrieve.knn import _faiss_gpu_knn
    from xretrieve.progress import no_progress

    if faiss.get_num_gpus() == 0:
        pytest.skip("faiss has no GPU support here")
    rng = np.random.default_rng(4)
    queries, database = random_rows(rng, 3000, 64), random_rows(rng, 2000, 64)
    got = _faiss_gpu_knn(queries, database, 4, 1000, no_progress, "kNN")
    want = knn(queries, database, 4, device="cpu")
    np.testing.assert_allclose(got[0], want[0], atol=1e-4)
    assert (got[1] == want[1]).mean() > 0.995
