#!/usr/bin/env bash
# The mining engine's GPU check, as one prepared run on a lent H100/H200 (see benchmarks/RESULTS.md).
# Needs only torch (with its Triton) and faiss-cpu there: stage faiss-cpu with
# ../shared/device/prepare-gpu-wheels.sh and source its install.sh first. Writes under ${OUT:-out}.
# About 8 minutes: the GPU tests, then 400k x 400k x 1024 with the peers, then 4M x 4M x 1024 in 16 GB.
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
timeout 150 python3 -m pytest -q -m gpu tests/test_knn.py tests/test_chunk_search.py 2>&1 | tee "$out/pytest_gpu.txt"
timeout 150 python3 benchmarks/bench_knn_margin.py --src 400000 --tgt 400000 --dim 1024 --repeats 3 \
  --skip numpy,faiss_cpu,torch_cpu,semantic_search > "$out/knn_400k.json" 2> "$out/knn_400k.err"
# sentence-transformers takes ~20 s a run at this size: once, beside the engine as reference.
timeout 120 python3 benchmarks/bench_knn_margin.py --src 400000 --tgt 400000 --dim 1024 --repeats 1 \
  --only torch_cuda,semantic_search > "$out/knn_400k_st.json" 2> "$out/knn_400k_st.err"
timeout 240 python3 benchmarks/bench_knn_margin.py --src 4000000 --tgt 4000000 --dim 1024 --repeats 1 \
  --data-dtype fp16 --gpu-memory 16GB --only torch_cuda > "$out/knn_4m.json" 2> "$out/knn_4m.err"
tail -n 5 "$out"/*.err
