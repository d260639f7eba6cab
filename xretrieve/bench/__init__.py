"""Throughput measurements shared by ``xretrieve bench`` and ``benchmarks/bench_*.py``:
workloads (``data``), machine and memory records (``machine``), embedding (``embedding``),
kNN + margin (``knn_margin``) and the command's run and report (``run``)."""
