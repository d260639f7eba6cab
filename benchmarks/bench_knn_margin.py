"""Benchmark full margin mining: kNN both ways + ratio margin + ``max`` selection.

Methods, all on the same random L2-normalised data (half of the rows are planted translation
pairs, so the mining has something to find):

- ``numpy``: brute force peer, blocked ``x @ y.T`` in numpy per direction + ``argpartition``.
- ``faiss_cpu``: ``xretrieve.margin.mine(device="cpu")`` (FAISS ``IndexFlatIP``).
- ``torch_cpu``: the blocked torch tile path (one product per tile for both directions), fp32.
- ``torch_cuda`` / ``faiss_gpu`` (only where a GPU exists): ``mine(device="cuda")`` (torch fp16
  tiles with fp32 refinement) and FAISS ``knn_gpu`` per direction.

Every method's kNN output feeds the same ``select_pairs``; the script checks that the mined pairs
agree with the first method run (the numpy peer unless skipped; fp16 GPU products may flip
near-ties, hence the 99.9 % bar) and prints one JSON document: median seconds, speed-up over
numpy.

    python benchmarks/bench_knn_margin.py --src 20000 --tgt 20000 --dim 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from xretrieve.knn import _faiss_gpu_knn, _torch_both_ways, knn_both_ways, l2_normalize
from xretrieve.margin import Margin, MinedPairs, Mode, select_pairs
from xretrieve.progress import no_progress

KnnResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_data(n_src: int, n_tgt: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n_src, dim), dtype=np.float32)
    tgt = rng.standard_normal((n_tgt, dim), dtype=np.float32)
    planted = min(n_src, n_tgt) // 2
    tgt[:planted] = src[:planted] + 0.5 * rng.standard_normal((planted, dim), dtype=np.float32)
    return l2_normalize(src), l2_normalize(tgt[rng.permutation(n_tgt)])


def numpy_topk(queries: np.ndarray, database: np.ndarray, k: int, block: int = 2048):
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


def numpy_both_ways(src, tgt, k) -> KnnResult:
    return (*numpy_topk(src, tgt, min(k, len(tgt))), *numpy_topk(tgt, src, min(k, len(src))))


def torch_cpu_both_ways(src, tgt, k) -> KnnResult:
    import torch

    return _torch_both_ways(
        src, tgt, min(k, len(tgt)), min(k, len(src)), "cpu", normalize=False,
        block_queries=4096, block_database=8192, compute_dtype=torch.float32,
    )  # fmt: skip


def faiss_gpu_both_ways(src, tgt, k) -> KnnResult:
    fwd = _faiss_gpu_knn(src, tgt, min(k, len(tgt)), None, no_progress, "fwd")
    bwd = _faiss_gpu_knn(tgt, src, min(k, len(src)), None, no_progress, "bwd")
    return (*fwd, *bwd)


def methods() -> dict[str, Callable[[np.ndarray, np.ndarray, int], KnnResult]]:
    import faiss
    import torch

    found: dict[str, Callable] = {
        "numpy": numpy_both_ways,
        "faiss_cpu": lambda s, t, k: knn_both_ways(s, t, k, device="cpu"),
        "torch_cpu": torch_cpu_both_ways,
    }
    if torch.cuda.is_available():
        found["torch_cuda"] = lambda s, t, k: knn_both_ways(s, t, k, device="cuda")
    if faiss.get_num_gpus() > 0:
        found["faiss_gpu"] = faiss_gpu_both_ways
    return found


def mine_with(search, src, tgt, k) -> tuple[MinedPairs, float, float]:
    start = time.perf_counter()
    fwd_sims, fwd_ids, bwd_sims, bwd_ids = search(src, tgt, k)
    knn_done = time.perf_counter()
    pairs = select_pairs(fwd_sims, fwd_ids, bwd_sims, bwd_ids, Margin.RATIO, Mode.MAX)
    end = time.perf_counter()
    return pairs, end - start, knn_done - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=int, default=20000, help="source rows")
    parser.add_argument("--tgt", type=int, default=20000, help="target rows")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out")
    args = parser.parse_args()

    import faiss
    import torch

    src, tgt = make_data(args.src, args.tgt, args.dim, args.seed)
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict] = {}
    reference: set[tuple[int, int]] | None = None  # pairs of the first method run (numpy)
    reference_name = None
    for name, search in methods().items():
        if name in skip:
            continue
        mine_with(search, src[:256], tgt[:256], args.k)  # warm-up (CUDA context, threads)
        totals, knn_times = [], []
        for _ in range(args.repeats):
            pairs, total, knn_time = mine_with(search, src, tgt, args.k)
            totals.append(total)
            knn_times.append(knn_time)
        mined = set(zip(pairs.src_index.tolist(), pairs.tgt_index.tolist(), strict=True))
        if reference is None:
            reference, reference_name = mined, name
        results[name] = {
            "seconds": statistics.median(totals),
            "knn_seconds": statistics.median(knn_times),
            "margin_seconds": statistics.median(totals) - statistics.median(knn_times),
            "runs": totals,
            "pairs": len(mined),
            "pair_agreement": len(mined & reference) / max(len(reference), 1),
        }
    base = results.get("numpy", {}).get("seconds")
    for entry in results.values():
        entry["speedup_vs_numpy"] = base / entry["seconds"] if base else None
    report = {
        "task": "kNN both ways + ratio margin + max mode",
        "src": args.src,
        "tgt": args.tgt,
        "dim": args.dim,
        "k": args.k,
        "repeats": args.repeats,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "faiss": faiss.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "agreement_reference": reference_name,
        "results": results,
        "all_agree": all(r["pair_agreement"] >= 0.999 for r in results.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
