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
The measuring code is ``xretrieve.benchmarking`` (shared with ``xretrieve bench``).

    python benchmarks/bench_knn_margin.py --src 20000 --tgt 20000 --dim 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict

import numpy as np

from xretrieve.benchmarking import bench_knn_margin, knn_methods, make_knn_data, speedups


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

    src, tgt = make_knn_data(args.src, args.tgt, args.dim, args.seed)
    skip = set(filter(None, args.skip.split(",")))
    methods = {name: search for name, search in knn_methods().items() if name not in skip}
    measured = bench_knn_margin(src, tgt, args.k, methods, repeats=args.repeats)
    ratios = speedups(measured, "numpy")
    results = {}
    for name, result in measured.items():
        entry = asdict(result)
        del entry["method"]
        entry["runs"] = list(result.runs)
        entry["speedup_vs_numpy"] = ratios[name]
        results[name] = entry
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
        "agreement_reference": next(iter(measured), None),
        "results": results,
        "all_agree": all(r.pair_agreement >= 0.999 for r in measured.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
