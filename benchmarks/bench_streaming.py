"""Benchmark mining through indexes in memory against streamed mining (issue #20): peak RSS and
time of each, and whether their pairs are identical. Prints one JSON document.

``--rows`` random unit rows per side (``--dim``; half the targets are noisy copies of sources),
saved as float32 ``.npy``, and an ``IVF{lists},Flat`` index per side in ``--shards`` shards
(built once, timed apart). Each path then runs in a fresh subprocess
(``mine_indexes(..., stream=...)`` with ``k``, ``--nprobe``, re-scoring of 4 x k candidates),
which reports its own peak RSS (``VmHWM``) after mining and before it (imports and the opened
indexes: the same in both), its wall time and the part of it after both searches ended (margins
and selection), and saves its pairs; the parent compares them.

    flock /work/notes/bench.lock python benchmarks/bench_streaming.py --rows 2000000
    python benchmarks/bench_streaming.py --rows 100000 --lists 256  # a quick check

The streamed path works in ``--work`` (default: a temporary directory) with the default part
sizes (2^20 query rows per scored part, 2^20 pairs per output part, 2^23 edges merged per step),
scaled down with ``--part-rows`` for small ``--rows`` so that there are several parts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_rows(rows: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows; targets ``[: rows // 2]`` are sources plus noise (cosine ~0.9)."""
    from xretrieve.index.sources import unit_rows

    rng = np.random.default_rng(seed)
    src = unit_rows(rng.standard_normal((rows, dim), dtype=np.float32))
    tgt = unit_rows(rng.standard_normal((rows, dim), dtype=np.float32))
    half = rows // 2
    noise = rng.standard_normal((half, dim), dtype=np.float32) * 0.3 / np.sqrt(dim)
    tgt[:half] = unit_rows(src[:half] + noise)
    return src, tgt


def build(directory: Path, args: argparse.Namespace) -> float:
    from xretrieve.index import BuildConfig, build_index

    started = time.perf_counter()
    src, tgt = make_rows(args.rows, args.dim)
    np.save(directory / "src.npy", src)
    np.save(directory / "tgt.npy", tgt)
    del src, tgt
    config = BuildConfig(
        factory=f"IVF{args.lists},Flat",
        train_size=min(args.rows, 50 * args.lists),
        shard_rows=-(-args.rows // args.shards),
    )
    for side in ("src", "tgt"):
        build_index([directory / f"{side}.npy"], directory / f"{side}-index", config)
    return time.perf_counter() - started


def child(args: argparse.Namespace) -> None:
    """One path, in this (fresh) process: prints its figures as JSON on the last line."""
    from xretrieve.bench.machine import peak_rss_bytes
    from xretrieve.index import SearchConfig, open_index
    from xretrieve.mining.margin import MiningConfig, Mode
    from xretrieve.mining.streaming import StreamConfig, Streaming
    from xretrieve.mining.through_index import mine_indexes

    directory = Path(args.directory)
    src, tgt = open_index(directory / "src-index"), open_index(directory / "tgt-index")
    config = MiningConfig(k=args.k, mode=Mode(args.mode), device="cpu")
    search = SearchConfig(nprobe=args.nprobe, block_rows=args.block_rows)
    before = peak_rss_bytes()
    started = time.perf_counter()
    searched: list[float] = []

    def note(stage: str, done: int, total: int | None) -> None:
        if stage.startswith("index search") and done == total:
            searched.append(time.perf_counter() - started)

    if args.child == "memory":
        pairs = mine_indexes(src, tgt, config, search, stream=Streaming.OFF, progress=note)
    else:
        work = StreamConfig(Path(args.work), part_rows=args.part_rows)
        pairs = mine_indexes(
            src, tgt, config, search, stream=Streaming.ON, work=work, progress=note
        )
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    np.save(directory / f"pairs-{args.child}.npy", np.stack([pairs.src_index, pairs.tgt_index]))
    np.save(directory / f"scores-{args.child}.npy", pairs.score)
    print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20),
                      # after both searches: margins and selection (and writing the pairs)
                      "after_search_seconds": round(seconds - max(searched), 1),
                      "before_mining_rss_mb": round(before / 2**20), "pairs": len(pairs)}))  # fmt: skip


def run_child(path: str, directory: Path, work: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", path, "--directory", str(directory)]
    command += ["--work", str(work), "--rows", str(args.rows), "--k", str(args.k)]
    command += ["--nprobe", str(args.nprobe), "--mode", args.mode]
    command += ["--block-rows", str(args.block_rows), "--part-rows", str(args.part_rows)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--lists", type=int, default=2048)
    parser.add_argument("--nprobe", type=int, default=2)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--mode", default="max")
    parser.add_argument("--block-rows", type=int, default=16_384)
    parser.add_argument("--part-rows", type=int, default=1 << 20)
    parser.add_argument("--directory", help="keep the data and indexes here (else a temp dir)")
    parser.add_argument("--work", help="the streamed path's work directory")
    parser.add_argument("--child", choices=["memory", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    temporary = args.directory is None
    directory = Path(args.directory or tempfile.mkdtemp(prefix="bench-streaming-"))
    directory.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else directory / "work"
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        built = None
        if not (directory / "tgt-index" / "manifest.json").is_file():
            built = round(build(directory, args), 1)
        results = {path: run_child(path, directory, work, args) for path in ("memory", "stream")}
        pairs = [np.load(directory / f"pairs-{p}.npy") for p in ("memory", "stream")]
        scores = [np.load(directory / f"scores-{p}.npy") for p in ("memory", "stream")]
        identical = bool(
            np.array_equal(*pairs)
            and np.array_equal(scores[0].view(np.int32), scores[1].view(np.int32))
        )
        from xretrieve.index import SearchConfig, open_index
        from xretrieve.index.search import block_finish
        from xretrieve.mining.streaming import in_memory_bytes
        from xretrieve.mining.through_index import direction_requests

        src, tgt = open_index(directory / "src-index"), open_index(directory / "tgt-index")
        requests = direction_requests(src, tgt, args.k, SearchConfig(nprobe=args.nprobe))
        estimate = in_memory_bytes(requests, [block_finish(r).wanted for r in requests])
        print(json.dumps({
            "rows_per_side": args.rows, "dim": args.dim, "k": args.k, "mode": args.mode,
            "factory": f"IVF{args.lists},Flat", "nprobe": args.nprobe, "shards": args.shards,
            "candidate_factor": 4, "build_seconds": built, "loadavg_at_start": loadavg,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "in_memory": results["memory"], "streamed": results["stream"],
            "identical_pairs": identical,
            "in_memory_estimate_mb": round(estimate / 2**20),
        }, indent=1))  # fmt: skip
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
