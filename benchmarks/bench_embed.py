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
with median ~20 tokens (BUCC/Tatoeba-like), clipped to [3, 128].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
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


def make_sentences(n: int, seed: int, median_tokens: float, sigma: float) -> list[str]:
    """``n`` sentences of common words (one token each for XLM-R-style vocabularies), whose
    lengths follow a log-normal around ``median_tokens`` (special tokens included)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(median_tokens), sigma, size=n)), 3, 128)
    words = (
        "the of and to in is was for on that with as by at from this be are it an not or have "
        "der die und den von zu das mit sich des auf ist im dem nicht ein eine als auch "
        "le la les de des et un une est en du que qui dans pour pas sur au "
        "cat dog house tree water city river book car sun moon day night small big red green"
    ).split()
    return [" ".join(rng.choice(words, size=int(length) - 2)) for length in lengths]


def matmul_params(config: dict) -> int:
    """Weights used in matrix multiplies per token: QKV + output projections and the FFN."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    return config["num_hidden_layers"] * (4 * hidden * hidden + 2 * hidden * inter)


class GpuMemoryPeak:
    """Peak device memory in use, sampled every 5 ms (ONNX Runtime's arena is invisible to
    torch's allocator statistics, so the whole device is watched; run nothing else on it)."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        free, total = torch.cuda.mem_get_info()
        self.baseline = total - free
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            free, total = self._torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. On Linux VmHWM of /proc/self/status: getrusage's
    ru_maxrss also counts the parent's resident set at fork time, before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(spec: dict) -> dict:
    """One configuration, in this process: load, warm up, time ``repeats`` runs (best kept)."""
    import torch

    from xretrieve.encoding import load_encoder
    from xretrieve.encoding.batching import padding_stats, plan_batches

    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    cuda = spec["device"] == "cuda"
    gpu_peak = GpuMemoryPeak() if cuda else None
    encoder = load_encoder(
        spec["model"],
        backend=spec["backend"],
        device=spec["device"],
        dtype=spec["dtype"],
        batch_tokens=spec["batch_tokens"],
    )
    encoder.encode(texts[: min(len(texts), 512)])  # warm-up: kernels, arena, autotuning
    best = None
    for _ in range(spec["repeats"]):
        encoder.encode(texts)
        if cuda:
            torch.cuda.synchronize()
        stats = encoder.last_stats
        if best is None or stats.seconds < best.seconds:
            best = stats
    real, padded, attention_cells = 0, 0, 0
    for start in range(0, len(texts), encoder.window):
        lengths = encoder.tokenizer.tokenize(texts[start : start + encoder.window]).lengths
        stats_window = padding_stats(lengths, plan_batches(lengths, encoder.batch_tokens))
        real, padded = real + stats_window[0], padded + stats_window[1]
        attention_cells += stats_window[2]
    config = spec["config"]
    # 2 FLOPs per multiply-add; attention scores and their weighted sum: 2 * 2 * s^2 * hidden
    # per sequence and layer.
    flops = 2 * matmul_params(config) * padded + 4 * config["hidden_size"] * (
        config["num_hidden_layers"] * attention_cells
    )
    result = {
        "backend": spec["backend"],
        "dtype": spec["dtype"],
        "device": spec["device"],
        "provider": best.provider,
        "sentences": best.sentences,
        "seconds": round(best.seconds, 4),
        "sentences_per_s": round(best.sentences_per_s, 1),
        "tokens_per_s": round(best.tokens_per_s, 1),
        "padding_efficiency": round(best.padding_efficiency, 4),
        "batches": best.batches,
        "achieved_tflops": round(flops / best.seconds / 1e12, 4),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
    }
    if gpu_peak is not None:
        result["peak_gpu_mb"] = round(gpu_peak.stop() / 2**20, 1)
        if spec["backend"] == "torch":
            result["peak_torch_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        name = torch.cuda.get_device_name()
        if "H100" in name:
            result["fraction_of_h100_fp16_peak"] = round(
                result["achieved_tflops"] / H100_FP16_PEAK_TFLOPS, 4
            )
    return result


def machine() -> dict:
    import onnxruntime
    import torch
    import transformers

    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        # Other processes on the machine skew CPU figures: the 1/5/15-minute load averages.
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


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
