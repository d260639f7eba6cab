"""Benchmark approximate FAISS indexes against exact search: recall@k and mining F1.

Two measurements, each printing one JSON document:

- ``recall``: ``--rows`` source and target rows of planted synthetic data (clustered, see
  ``make_rows``; half the targets are noisy copies of sources), stored as float16 ``.npy``; an
  index over the targets with the device's default factory (or ``--factory``) built by
  ``xretrieve.index.build_index``, each phase timed (sample, OPQ, coarse k-means, PQ, adding)
  beside its estimate and beside FAISS alone (``index_factory`` + ``train`` on the same seeded
  sample + ``add`` of every row, same training settings; ``--no-peer`` skips it), the
  difference being xretrieve's overhead; ``--queries`` sampled sources
  searched through it at each ``--nprobe``, k = 16: in index order, re-scored exactly, and
  re-scored from 4 x k candidates keeping the best k (the default), against
  exact FAISS ``IndexFlatIP`` ground truth. Reports recall@1, recall@k (|ANN top k & exact
  top k| / k), the planted partner at rank 1, and per-shard throughputs for scaling.
- ``bucc``: two BUCC-layout splits (tuning and test; ``--pairs`` gold pairs plus ``--noise``
  unrelated sentences per side, same generator) mined exactly (``xretrieve.mining.corpus.mine_corpora``)
  and through default indexes (``mine_corpora_with_indexes``); threshold tuned on the tuning
  split and applied to the test split, as ``xretrieve bucc``. Reports F1 of each variant.

    python benchmarks/bench_index.py recall --rows 200000 --dim 384 --queries 10000
    python benchmarks/bench_index.py recall --rows 1000000 --dim 1024 --queries 10000  # 1M x 1M
    python benchmarks/bench_index.py bucc --pairs 5000 --noise 45000 --dim 384
"""

from __future__ import annotations

import os

# Before FAISS loads: the same OpenMP wait policy as the training process of an xretrieve build
# on a CPU (``xretrieve.index.build._training_environment``), so that xretrieve's adding and the
# FAISS-alone peer run like for like.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from xretrieve.bench.machine import peak_rss_bytes  # noqa: E402
from xretrieve.index import (  # noqa: E402
    BuildConfig,
    SearchConfig,
    TrainingEstimate,
    TrainingPhase,
    build_index,
    open_index,
)
from xretrieve.index.search import search_in_process  # noqa: E402
from xretrieve.index.sources import unit_rows  # noqa: E402

ADD_STAGE = "add to index"


def make_rows(n_src: int, n_tgt: int, dim: int, planted: int, seed: int, clusters: int = 2000):
    """Clustered unit rows, a stand-in for sentence embeddings (which are far from isotropic):
    ``clusters`` random centres; a row is a centre plus Gaussian spread of the same norm.
    Targets ``[:planted]`` are sources ``[:planted]`` plus translation noise (cosine ~0.87 to
    their source, against ~0.5 within a cluster). Returns float16 matrices, targets shuffled,
    and ``partner`` (n_src,) the target row of each planted source (-1 for the others)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)

    def sample(n: int) -> np.ndarray:
        spread = rng.standard_normal((n, dim), dtype=np.float32)
        return unit_rows(centres[rng.integers(0, clusters, n)] + spread)

    src = sample(n_src)
    tgt = sample(n_tgt)
    noise = rng.standard_normal((planted, dim), dtype=np.float32) / np.sqrt(dim)
    tgt[:planted] = unit_rows(src[:planted] + 0.55 * noise * np.sqrt(2))
    order = rng.permutation(n_tgt)
    partner = np.full(n_src, -1, dtype=np.int64)
    partner[:planted] = np.argsort(order)[:planted]
    return src.astype(np.float16), tgt[order].astype(np.float16), partner


def exact_topk(queries: np.ndarray, database: np.ndarray, k: int):
    import faiss

    index = faiss.IndexFlatIP(database.shape[1])
    for a in range(0, database.shape[0], 65536):
        index.add(unit_rows(database[a : a + 65536]))
    return index.search(unit_rows(queries), k)


class StageClock:
    """A ProgressCallback that records when each stage starts and last advances, and the
    training estimate given before training (``on_estimate``)."""

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.estimate: TrainingEstimate | None = None
        self.estimated_at: float | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        self.start.setdefault(stage, now)
        self.last[stage] = now

    def on_estimate(self, estimate: TrainingEstimate) -> None:
        self.estimate, self.estimated_at = estimate, time.perf_counter()

    def seconds(self, stage: str) -> float | None:
        if stage not in self.start:
            return None
        return round(self.last[stage] - self.start[stage], 3)

    def training_seconds(self) -> float | None:
        """From the estimate (the training process has started) to the last training phase's
        end: probes, sample, phases."""
        phases = [p.value for p in TrainingPhase if p.value in self.last]
        if self.estimated_at is None or not phases:
            return None
        return round(max(self.last[p] for p in phases) - self.estimated_at, 3)

    def report(self) -> dict:
        """Each stage's seconds in the order they ran, with the estimate beside them."""
        estimated = dict(self.estimate.phases) if self.estimate else {}
        stages = {}
        for stage in sorted(self.start, key=self.start.get):
            entry = {"seconds": self.seconds(stage)}
            phase = next((p for p in TrainingPhase if p.value == stage), None)
            if phase in estimated:
                entry["estimated_seconds"] = round(estimated[phase], 1)
            if stage == ADD_STAGE and self.estimate:
                entry["estimated_seconds"] = round(self.estimate.add_seconds, 1)
            stages[stage] = entry
        return {
            "stages": stages,
            "training_seconds": self.training_seconds(),
            "estimate": self.estimate.describe() if self.estimate else None,
            "estimated_training_seconds": round(self.estimate.training_seconds, 1)
            if self.estimate
            else None,
        }


def faiss_alone(path: Path, factory: str, train_size: int, seed: int) -> dict:
    """FAISS without xretrieve on the rows of ``path``: ``index_factory``, ``train`` on the
    sample ``build_index`` draws (same seed, same unit rows), ``add`` of every row in blocks of
    65536; polysemous PQ training off, as xretrieve trains. Seconds of each step."""
    import faiss

    data = np.load(path, mmap_mode="r")
    t0 = time.perf_counter()
    index = faiss.index_factory(data.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    encoder = faiss.downcast_index(ivf) if ivf is not None else faiss.downcast_index(index)
    if hasattr(encoder, "do_polysemous_training"):
        encoder.do_polysemous_training = False
    if train_size:
        rng = np.random.default_rng(seed)
        ids = np.sort(rng.choice(data.shape[0], size=train_size, replace=False))
        sample = unit_rows(np.asarray(data[ids], dtype=np.float32))
        t1 = time.perf_counter()
        index.train(sample)
    else:
        t1 = time.perf_counter()
    t2 = time.perf_counter()
    for a in range(0, data.shape[0], 65_536):
        index.add(unit_rows(np.asarray(data[a : a + 65_536], dtype=np.float32)))
    t3 = time.perf_counter()
    return {
        "sample_seconds": round(t1 - t0, 3),
        "train_seconds": round(t2 - t1, 3),
        "add_seconds": round(t3 - t2, 3),
        "total_seconds": round(t3 - t0, 3),
    }


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def machine() -> dict:
    import faiss

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "faiss": faiss.__version__,
        "faiss_gpus": int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0,
        "numpy": np.__version__,
    }


def run_recall(args: argparse.Namespace, work: Path) -> dict:
    src, tgt, partner = make_rows(args.rows, args.rows, args.dim, args.rows // 2, args.seed)
    np.save(work / "tgt.npy", tgt)
    np.save(work / "src.npy", src)
    rng = np.random.default_rng(args.seed + 1)
    query_rows = np.sort(rng.choice(args.rows, size=min(args.queries, args.rows), replace=False))
    k = args.k
    t0 = time.perf_counter()
    exact_sims, exact_ids = exact_topk(src[query_rows], tgt, k)
    exact_seconds = time.perf_counter() - t0

    clock = StageClock()
    config = BuildConfig(
        factory=args.factory, train_size=args.train_size, shard_rows=args.shard_rows,
        seed=args.seed, device=args.device,
    )  # fmt: skip
    load_at_build = loadavg()
    t0 = time.perf_counter()
    manifest = build_index(
        [work / "tgt.npy"], work / "index", config, progress=clock, on_estimate=clock.on_estimate
    )
    build_seconds = time.perf_counter() - t0
    peer = None
    if args.peer:
        peer = faiss_alone(work / "tgt.npy", manifest.factory, manifest.train_size, args.seed)
        peer["loadavg_at_start"] = loadavg()
        peer["xretrieve_overhead"] = round(build_seconds / peer["total_seconds"] - 1, 4)
    index = open_index(work / "index")
    from xretrieve.index.search import SearchRequest, search_direction
    from xretrieve.index.sources import EmbeddingRows

    queries = EmbeddingRows([work / "src.npy"])
    results = []
    for nprobe in args.nprobe:
        # (rescore, candidate_factor): stopes' plain index order; re-scoring the index's own top
        # k; re-scoring 4 x k candidates and keeping the best k (the default).
        for rescore, factor in ((False, 1), (True, 1), (True, 4)):
            search = SearchConfig(
                nprobe=nprobe, block_rows=4096, rescore=rescore, candidate_factor=factor
            )
            t0 = time.perf_counter()
            request = SearchRequest(index, queries, query_rows, k, None, search, "search")
            sims, ids = search_direction(request, search_in_process)
            search_seconds = time.perf_counter() - t0
            overlap = np.mean(
                [
                    len(set(a) & set(b)) / k
                    for a, b in zip(ids.tolist(), exact_ids.tolist(), strict=True)
                ]
            )
            planted = partner[query_rows] >= 0
            results.append(
                {
                    "nprobe": nprobe,
                    "rescore": rescore,
                    "candidate_factor": factor,
                    "recall_at_1": float(np.mean(ids[:, 0] == exact_ids[:, 0])),
                    f"recall_at_{k}": float(overlap),
                    "planted_partner_at_1": float(
                        np.mean(ids[planted, 0] == partner[query_rows][planted])
                    ),
                    "exact_planted_partner_at_1": float(
                        np.mean(exact_ids[planted, 0] == partner[query_rows][planted])
                    ),
                    "max_abs_sim_error_top1": float(np.max(np.abs(sims[:, 0] - exact_sims[:, 0]))),
                    "search_seconds": round(search_seconds, 3),
                    "queries_per_s": round(query_rows.size / search_seconds, 1),
                }
            )
    shard_bytes = sum(s.bytes for s in manifest.shards)
    return {
        "task": "recall@k of an approximate index vs exact search (planted clustered data)",
        "rows": args.rows,
        "dim": args.dim,
        "k": k,
        "queries": int(query_rows.size),
        "factory": manifest.factory,
        "factory_note": manifest.factory_note,
        "train_size": manifest.train_size,
        "shards": len(manifest.shards),
        "loadavg_at_build": load_at_build,
        "build": clock.report(),
        "build_seconds": round(build_seconds, 3),
        "faiss_alone": peer,
        "index_bytes": shard_bytes,
        "index_bytes_per_row": round(shard_bytes / args.rows, 2),
        "exact_search_seconds": round(exact_seconds, 3),
        "peak_rss_bytes": peak_rss_bytes(),
        "machine": machine(),
        "results": results,
    }


def write_bucc_split(root: Path, split: str, pairs: int, noise: int, dim: int, seed: int) -> None:
    """``root/bucc2018/de-en.{split}.{de,en,gold}`` and ``root/emb/...npy`` from ``make_rows``."""
    n = pairs + noise
    src, tgt, partner = make_rows(n, n, dim, pairs, seed)
    data = root / "bucc2018"
    emb = root / "emb" / "bucc2018"
    data.mkdir(parents=True, exist_ok=True)
    emb.mkdir(parents=True, exist_ok=True)
    stem = f"de-en.{split}"
    with open(data / f"{stem}.de", "w", encoding="utf-8") as handle:
        handle.writelines(f"de-{split}-{i:08d}\tsatz {split} {i}\n" for i in range(n))
    with open(data / f"{stem}.en", "w", encoding="utf-8") as handle:
        handle.writelines(f"en-{split}-{i:08d}\tsentence {split} {i}\n" for i in range(n))
    with open(data / f"{stem}.gold", "w", encoding="utf-8") as handle:
        handle.writelines(
            f"de-{split}-{i:08d}\ten-{split}-{int(partner[i]):08d}\n" for i in range(pairs)
        )
    np.save(emb / f"{stem}.de.npy", src)
    np.save(emb / f"{stem}.en.npy", tgt)


def run_bucc(args: argparse.Namespace, work: Path) -> dict:
    from xretrieve.formats import read_bucc_split
    from xretrieve.mining.corpus import id_candidates, mine_corpora
    from xretrieve.mining.gold import gold_mask, optimize_threshold, precision_recall_f1
    from xretrieve.mining.margin import MiningConfig
    from xretrieve.mining.through_index import IndexMining, mine_corpora_with_indexes

    splits = {}
    build = {}
    for number, split in enumerate(("training", "test")):
        write_bucc_split(work, split, args.pairs, args.noise, args.dim, args.seed + number)
        emb = work / "emb" / "bucc2018"
        src_npy, tgt_npy = emb / f"de-en.{split}.de.npy", emb / f"de-en.{split}.en.npy"
        splits[split] = (read_bucc_split(work, "de", split), src_npy, tgt_npy)
        if split == "training" and args.tune == "exact":
            continue  # thresholds from exact mining: no training-split indexes needed
        clock = StageClock()
        t0 = time.perf_counter()
        config = BuildConfig(
            factory=args.factory, train_size=args.train_size, seed=args.seed, device=args.device
        )
        src_index, tgt_index = work / f"{split}.de.index", work / f"{split}.en.index"
        if args.keep and (tgt_index / "manifest.json").is_file():
            # --keep: the data are regenerated identically (seeded), so are the indexes.
            manifest = open_index(src_index).manifest
            build[split] = (manifest, None, clock)
            continue
        manifest = build_index(
            [src_npy], src_index, config, progress=clock, on_estimate=clock.on_estimate
        )
        build_index([tgt_npy], tgt_index, config)
        build[split] = (manifest, time.perf_counter() - t0, clock)

    def scored(mining, split: str):
        bucc = splits[split][0]
        candidates = id_candidates(mining, bucc.src, bucc.tgt)
        return candidates, gold_mask(candidates, bucc.gold, bucc.src, bucc.tgt)

    def score(mine_split, k: int) -> dict:
        """As ``xretrieve bucc``: threshold tuned on the training split, F1 on the test split
        (with ``--tune exact`` the training split is mined exactly with the same k)."""
        tune_split = mine_split if args.tune == "index" else exact(k)
        candidates, correct = scored(tune_split("training"), "training")
        threshold, tune_f1 = optimize_threshold(candidates.score, correct, args.pairs)
        t0 = time.perf_counter()
        mining = mine_split("test")
        seconds = time.perf_counter() - t0
        candidates, correct = scored(mining, "test")
        precision, recall, f1, _ = precision_recall_f1(
            candidates.score, correct, args.pairs, threshold
        )
        _, oracle = optimize_threshold(candidates.score, correct, args.pairs)
        return {
            "threshold": round(threshold, 5),
            "tune_f1": round(100 * tune_f1, 3),
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "f1": round(f1, 3),
            "oracle_f1": round(100 * oracle, 3),
            "test_mining_seconds": round(seconds, 3),
        }

    def exact(k: int):
        def mine_split(split: str):
            bucc, src_npy, tgt_npy = splits[split]
            src = np.load(src_npy).astype(np.float32)
            tgt = np.load(tgt_npy).astype(np.float32)
            return mine_corpora(bucc.src, bucc.tgt, src, tgt, MiningConfig(k=k, device="cpu"))

        return mine_split

    def indexed(k: int, nprobe: int | None, rescore: bool, factor: int = 4):
        def mine_split(split: str):
            bucc = splits[split][0]
            where = IndexMining(
                work / f"{split}.de.index",
                work / f"{split}.en.index",
                SearchConfig(nprobe=nprobe, rescore=rescore, candidate_factor=factor),
            )
            return mine_corpora_with_indexes(bucc.src, bucc.tgt, where, MiningConfig(k=k))

        return mine_split

    variants = {
        "exact k=4": (exact(4), 4),
        "exact k=16": (exact(16), 16),
        "index k=16 nprobe=auto rescore 4k candidates (defaults)": (indexed(16, None, True), 16),
        "index k=16 nprobe=128 rescore 4k candidates": (indexed(16, 128, True), 16),
        "index k=16 nprobe=128 rescore own top k": (indexed(16, 128, True, 1), 16),
        "index k=16 nprobe=128 no rescore (stopes)": (indexed(16, 128, False), 16),
        "index k=16 nprobe=32 rescore 4k candidates": (indexed(16, 32, True), 16),
        "index k=4 nprobe=auto rescore 4k candidates": (indexed(4, None, True), 4),
    }
    for nprobe in args.sweep_nprobe:
        for factor in args.sweep_factor:
            name = f"index k=16 nprobe={nprobe} rescore {factor}k candidates"
            variants.setdefault(name, (indexed(16, nprobe, True, factor), 16))
    results = {name: score(mine_split, k) for name, (mine_split, k) in variants.items()}
    manifest, build_seconds, clock = build["test"]
    return {
        "task": "BUCC-layout mining F1: exact vs approximate indexes",
        "pairs": args.pairs,
        "sentences_per_side": args.pairs + args.noise,
        "dim": args.dim,
        "threshold_tuned_on": "training split mined exactly, same k"
        if args.tune == "exact"
        else "training split mined through its own indexes",
        "factory": manifest.factory,
        "factory_note": manifest.factory_note,
        "train_size": manifest.train_size,
        "test_build_seconds_both_sides": None if build_seconds is None else round(build_seconds, 3),
        "test_build_one_side": clock.report(),
        "peak_rss_bytes": peak_rss_bytes(),
        "machine": machine(),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    recall = sub.add_parser("recall", help="recall@k against exact search")
    recall.add_argument("--rows", type=int, default=200_000, help="rows per side")
    recall.add_argument("--queries", type=int, default=10_000)
    recall.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 128, 256])
    recall.add_argument("--k", type=int, default=16)
    recall.add_argument("--shard-rows", type=int, default=1_000_000)
    recall.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time FAISS alone (index_factory + train + add) on the same sample",
    )
    bucc = sub.add_parser("bucc", help="mining F1 against exact mining")
    bucc.add_argument("--pairs", type=int, default=5_000)
    bucc.add_argument("--noise", type=int, default=45_000)
    bucc.add_argument(
        "--tune",
        choices=("index", "exact"),
        default="index",
        help="mine the training split through its own indexes (as a user would) or exactly",
    )
    bucc.add_argument("--sweep-nprobe", type=int, nargs="*", default=[], help="extra variants")
    bucc.add_argument(
        "--sweep-factor", type=int, nargs="*", default=[4], help="with --sweep-nprobe"
    )
    bucc.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="work in this directory and reuse the indexes an earlier run with the same "
        "arguments left there",
    )
    for command in (recall, bucc):
        command.add_argument("--dim", type=int, default=384)
        command.add_argument(
            "--factory", default=None, help="default: the device's (xretrieve.index.training)"
        )
        command.add_argument("--device", default="auto", help="auto, cpu or cuda")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--train-size", type=int, default=None, help="default: by size")
        command.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"loadavg at start: {loadavg()}", file=sys.stderr, flush=True)
    run = run_recall if args.what == "recall" else run_bucc
    if getattr(args, "keep", None):
        args.keep.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args, args.keep), indent=2))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print(json.dumps(run(args, Path(tmp)), indent=2))
    print(f"loadavg at end: {loadavg()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
