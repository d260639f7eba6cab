"""Benchmark full margin mining: kNN both ways + ratio margin + ``max`` selection.

Methods, all on the same random L2-normalised data (half of the rows are planted translation
pairs, so the mining has something to find), each feeding the same ``select_pairs``:

- ``numpy``: brute-force peer, blocked ``x @ y.T`` in numpy per direction + ``argpartition``.
- ``faiss_cpu``: ``xretrieve.mining.margin.mine_rows(device="cpu")``'s search (FAISS, exact fp32).
- ``torch_cpu``: xretrieve's chunk-maxima engine on the CPU (fp32 products).
- GPU only: ``torch_cuda`` (``mine(device="cuda")``: fp16 chunk maxima, fused Triton kernel
  when it works, fp32 re-scoring, exact), ``torch_cuda_torch_kernel`` (the same engine with
  the unfused torch reduction, to choose the kernel by measurement), and the peers
  ``torch_loop_cuda`` (bare torch fp16: one product + row ``topk`` per block and direction,
  not exact), ``faiss_gpu`` (``GpuIndexFlatIP`` fp32 per direction, when FAISS sees a GPU) and
  ``semantic_search`` (sentence-transformers' ``util.semantic_search`` both ways, when
  installed).

The first method run is the reference: every method reports the fraction of its mined pairs and
of its k-nearest ids equal to the reference's (``exact_neighbours``; put an exact method first),
per-phase seconds (xretrieve's engine: ``kNN candidates``, ``kNN forward``/``backward``
re-scoring, then ``margin``), and peak GPU memory. One JSON document on stdout.
The measuring code is ``xretrieve.bench.run`` (shared with ``xretrieve bench``).

    # CPU, small sizes, with the brute-force and FAISS peers
    python benchmarks/bench_knn_margin.py --src 20000 --tgt 20000 --dim 256 --repeats 3
    # GPU, BUCC size: the engine against its peers (FAISS CPU first as the exact reference
    # would take minutes at this size, so the engine's fp32 result is the reference instead)
    python benchmarks/bench_knn_margin.py --src 400000 --tgt 400000 --dim 1024 --repeats 3 \\
        --skip numpy,faiss_cpu,torch_cpu
    # GPU, larger than a 16 GB budget: 4M x 4M x 1024, float16 rows, xretrieve only
    python benchmarks/bench_knn_margin.py --src 4000000 --tgt 4000000 --dim 1024 --repeats 1 \\
        --data-dtype fp16 --gpu-memory 16GB --only torch_cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict

import numpy as np

from xretrieve.bench.data import make_knn_data
from xretrieve.bench.knn_margin import bench_knn_margin, knn_methods, speedups
from xretrieve.core.sizes import parse_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=int, default=20000, help="source rows")
    parser.add_argument("--tgt", type=int, default=20000, help="target rows")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dtype",
        choices=("fp32", "fp16"),
        default="fp32",
        help="dtype of the generated rows (fp16 halves host memory at 4M)",
    )
    parser.add_argument(
        "--gpu-memory",
        type=parse_bytes,
        default=None,
        help="device memory for xretrieve's GPU search, e.g. 16GB",
    )
    parser.add_argument("--skip", default="", help="comma-separated methods to leave out")
    parser.add_argument("--only", default="", help="comma-separated methods to run (all: empty)")
    args = parser.parse_args()

    import faiss
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = np.float16 if args.data_dtype == "fp16" else np.float32
    src, tgt = make_knn_data(args.src, args.tgt, args.dim, args.seed, dtype=dtype, device=device)
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    methods = {
        name: search
        for name, search in knn_methods(gpu_memory=args.gpu_memory).items()
        if name not in skip and (not only or name in only)
    }
    measured = bench_knn_margin(src, tgt, args.k, methods, repeats=args.repeats)
    baseline = "numpy" if "numpy" in measured else next(iter(measured), None)
    ratios = speedups(measured, baseline) if baseline else {}
    peers = ("torch_loop_cuda", "faiss_gpu", "semantic_search", "faiss_cpu")
    results = {}
    for name, result in measured.items():
        entry = asdict(result)
        del entry["method"]
        entry["runs"] = list(result.runs)
        entry[f"speedup_vs_{baseline}"] = ratios.get(name)
        for peer in peers:
            if peer in measured and peer != name:
                entry[f"speedup_vs_{peer}"] = measured[peer].seconds / result.seconds
        results[name] = entry
    report = {
        "task": "kNN both ways + ratio margin + max mode",
        "src": args.src,
        "tgt": args.tgt,
        "dim": args.dim,
        "k": args.k,
        "repeats": args.repeats,
        "data_dtype": args.data_dtype,
        "gpu_memory": args.gpu_memory,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "faiss": faiss.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "agreement_reference": next(iter(measured), None),
        "results": results,
        "all_agree": all(r.pair_agreement >= 0.999 for r in measured.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
