"""Embedding throughput: ONNX Runtime vs torch, fp16 vs fp32, on a realistic length distribution.

Prints one JSON document: per configuration sentences/s, tokens/s (real tokens, special tokens
included), padding efficiency (real / padded tokens), peak host RSS, peak GPU memory (CUDA
only), an estimate of the achieved matmul TFLOP/s, and the ratio to the torch run of the same
dtype. Each configuration runs in its own process so that peak memory is its own.

    python benchmarks/bench_embed.py --model tiny --sentences 2000            # CPU, a minute
    python benchmarks/bench_embed.py --model large-random --sentences 50000 \\
        --device cuda --dtypes fp16 --batch-tokens 32768                     # H100 target

``--model`` is a checkpoint directory or a random XLM-R size (tiny: 256 wide, 4 layers; base-random:
XLM-R base shape; large-random: XLM-R large shape). Sentence lengths are drawn from a log-normal
with median ~20 tokens (BUCC/Tatoeba-like), clipped to [3, 128]. The measuring code is
``xretrieve.benchmarking`` (shared with ``xretrieve bench``); this script adds the random models,
one process per configuration and the FLOP estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# name -> (hidden, layers, heads, intermediate)
RANDOM_SIZES = {
    "tiny": (256, 4, 4, 1024),
    "base-random": (768, 12, 12, 3072),
    "large-random": (1024, 24, 16, 4096),
}
# Dense fp16/bf16 tensor-core peak of an H100 SXM, for the "fraction of peak" figure.
H100_FP16_PEAK_TFLOPS = 989.0


def build_random_checkpoint(size: str, out_dir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tiny_checkpoint

    hidden, layers, heads, intermediate = RANDOM_SIZES[size]
    return make_tiny_checkpoint(
        out_dir,
        "xlm-roberta",
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        max_length=512,
    )


def matmul_params(config: dict) -> int:
    """Weights used in matrix multiplies per token: QKV + output projections and the FFN."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    return config["num_hidden_layers"] * (4 * hidden * hidden + 2 * hidden * inter)


def worker(spec: dict) -> dict:
    """One configuration, in this process: ``xretrieve.benchmarking.bench_embedding`` plus the
    FLOP estimate from the padded-token and attention-cell counts computed by the parent."""
    import torch

    from xretrieve.benchmarking import EmbedSetting, bench_embedding, peak_rss_bytes

    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    setting = EmbedSetting(
        spec["backend"], spec["dtype"], spec["device"], spec["batch_tokens"], spec["repeats"]
    )
    best = bench_embedding(spec["model"], setting, texts)
    config = spec["config"]
    # 2 FLOPs per multiply-add; attention scores and their weighted sum: 2 * 2 * s^2 * hidden
    # per sequence and layer.
    flops = 2 * matmul_params(config) * best.padded_tokens + 4 * config["hidden_size"] * (
        config["num_hidden_layers"] * spec["attention_cells"]
    )
    result = {
        "backend": best.backend,
        "dtype": best.dtype,
        "device": best.device,
        "provider": best.provider,
        "sentences": best.sentences,
        "seconds": round(best.seconds, 4),
        "sentences_per_s": round(best.sentences_per_s, 1),
        "tokens_per_s": round(best.tokens_per_s, 1),
        "padding_efficiency": round(best.padding_efficiency, 4),
        "batches": best.batches,
        "batch_p50_ms": round(best.batch_p50_ms, 3),
        "batch_p95_ms": round(best.batch_p95_ms, 3),
        "achieved_tflops": round(flops / best.seconds / 1e12, 4),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }
    if best.peak_gpu_mb is not None:
        result["peak_gpu_mb"] = round(best.peak_gpu_mb, 1)
        if spec["backend"] == "torch":
            result["peak_torch_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        name = torch.cuda.get_device_name()
        if "H100" in name:
            result["fraction_of_h100_fp16_peak"] = round(
                result["achieved_tflops"] / H100_FP16_PEAK_TFLOPS, 4
            )
    return result


def attention_cells(checkpoint: Path, texts: list[str], batch_tokens: int) -> int:
    """Sum over batches of ``batch_size * padded_length ** 2``, batched as the encoder does
    (length-sorted windows of ``DEFAULT_WINDOW`` sentences cut by the token budget)."""
    from xretrieve.encoding.batching import padding_stats, plan_batches
    from xretrieve.encoding.encoder import DEFAULT_WINDOW
    from xretrieve.encoding.tokenize import TextTokenizer

    tokenizer = TextTokenizer.from_directory(checkpoint)
    cells = 0
    for start in range(0, len(texts), DEFAULT_WINDOW):
        lengths = tokenizer.tokenize(texts[start : start + DEFAULT_WINDOW]).lengths
        cells += padding_stats(lengths, plan_batches(lengths, batch_tokens))[2]
    return cells


def export_once(checkpoint: Path, out_dir: Path, dtype: str) -> Path:
    from exporters import ExportConfig, export_checkpoint

    export_checkpoint(checkpoint, out_dir, ExportConfig(dtype=dtype))
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="tiny", help="checkpoint dir, or " + "|".join(RANDOM_SIZES)
    )
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--backends", default="ort,torch")
    parser.add_argument("--dtypes", default="fp32,fp16")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--median-tokens", type=float, default=20.0)
    parser.add_argument("--sigma", type=float, default=0.6, help="log-normal shape of the lengths")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    from xretrieve.benchmarking import machine_info as machine
    from xretrieve.benchmarking import make_sentences

    machine_info = machine()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        tmp_dir = Path(tmp)
        if args.model in RANDOM_SIZES:
            checkpoint = build_random_checkpoint(args.model, tmp_dir / "checkpoint")
        else:
            checkpoint = Path(args.model)
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
        texts = make_sentences(args.sentences, args.seed, args.median_tokens, args.sigma)
        texts_path = tmp_dir / "texts.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        cells = attention_cells(checkpoint, texts, args.batch_tokens)
        backends, dtypes = args.backends.split(","), args.dtypes.split(",")
        exports = {}
        if "ort" in backends:
            for dtype in dtypes:
                exports[dtype] = export_once(checkpoint, tmp_dir / f"export-{dtype}", dtype)
        results = []
        for backend in backends:
            for dtype in dtypes:
                spec = {
                    "model": str(exports[dtype] if backend == "ort" else checkpoint),
                    "backend": backend,
                    "dtype": dtype,
                    "device": device,
                    "batch_tokens": args.batch_tokens,
                    "repeats": args.repeats,
                    "texts": str(texts_path),
                    "config": config,
                    "attention_cells": cells,
                }
                env = {**os.environ, "XRETRIEVE_CACHE": str(tmp_dir / "cache")}
                run = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if run.returncode != 0:
                    tail = run.stderr.strip().splitlines()[-3:]
                    results.append({"backend": backend, "dtype": dtype, "error": " | ".join(tail)})
                else:
                    results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        torch_rates = {
            r["dtype"]: r["sentences_per_s"]
            for r in results
            if r["backend"] == "torch" and "error" not in r
        }
        for result in results:
            if "error" not in result and result["dtype"] in torch_rates:
                result["speedup_vs_torch_same_dtype"] = round(
                    result["sentences_per_s"] / torch_rates[result["dtype"]], 3
                )
        from xretrieve.encoding.tokenize import TextTokenizer

        lengths = TextTokenizer.from_directory(checkpoint).tokenize(texts).lengths
        report = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                **machine_info,
                "load_average_after": [round(load, 2) for load in os.getloadavg()],
            },
            "model": {
                "name": args.model,
                "hidden_size": config["hidden_size"],
                "num_hidden_layers": config["num_hidden_layers"],
                "intermediate_size": config["intermediate_size"],
                "matmul_params": matmul_params(config),
            },
            "workload": {
                "sentences": len(texts),
                "batch_tokens": args.batch_tokens,
                "token_length_median": float(np.median(lengths)),
                "token_length_mean": round(float(np.mean(lengths)), 2),
                "token_length_p90": float(np.percentile(lengths, 90)),
                "token_length_max": int(lengths.max()),
            },
            "results": results,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
