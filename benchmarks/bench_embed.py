"""Embedding throughput: ONNX Runtime (fp32, fp16, int8) vs torch vs sentence-transformers.

Prints one JSON document: per configuration sentences/s, tokens/s (real tokens, special tokens
included), padding efficiency (real / padded tokens), peak host RSS, peak GPU memory (CUDA
only), an estimate of the achieved matmul TFLOP/s, the load average before and after it ran
(the machine may be shared), and ratios: to torch of the same dtype, to ORT fp32, and to
sentence-transformers of the same dtype. Each configuration runs in its own process so that
peak memory is its own; with ``--rounds R`` the whole list runs R times in turn (A B C A B C:
load that comes and goes hits every configuration alike) and the fastest round counts.

    python benchmarks/bench_embed.py --model tiny --sentences 2000            # CPU, a minute
    python benchmarks/bench_embed.py --model default --sentences-file tests/data/default_model_sentences.txt \
        --sentences 2000 --device cpu --dtypes fp32,int8,int8-batch --backends ort --rounds 3 \
        --quality 2048
    python benchmarks/bench_embed.py --model large-random --sentences 50000 \
        --device cuda --dtypes fp16 --batch-tokens 32768                     # H100 target

The CPU default path against sentence-transformers (issue 21), on the real sentences bundled
with xretrieve (each distinct line once: 2,088 in about 60 languages):

    python benchmarks/bench_embed.py --model default --device cpu --dtypes fp32,auto \
        --cpu-settings now,before --sentences-file tests/data/default_model_sentences.txt \
        --sentences-file xretrieve/sample_data/bucc2018/de-en.sample.de \
        --sentences-file xretrieve/sample_data/bucc2018/de-en.sample.en \
        --sentences-file exporters/data/heldout_parallel.tsv --sentences 2000 --rounds 3 --quality 2048

``--model`` is a checkpoint directory, ``default`` (multilingual-e5-small, converted offline,
with its "query: " prefix) or a random XLM-R size (tiny: 256 wide, 4 layers; base-random:
XLM-R base shape; large-random: XLM-R large shape). Sentences come from ``--sentences-file``
(one per line, cycled up to ``--sentences``) or are generated: lengths log-normal with median
~20 tokens (BUCC/Tatoeba-like), clipped to [3, 128]. Dtypes: fp32, fp16, auto (what a checkpoint gets on the CPU by default: ``export --dtype
auto``'s held-out choice, int8 or fp32), int8 (per-channel
weight scales, per-token or calibrated activation scales: what ``xretrieve export --dtype int8``
makes), int8-tensor (one weight scale per matrix), int8-matmul (the fused Attention left fp32)
and int8-batch (ONNX Runtime's dynamic quantisation unchanged: one activation scale per batch,
what ``export`` made before); int8 runs on ORT only. ``--quality B`` adds, per CPU export, how
far embeddings move between ``--batch-tokens`` and B, held-out accuracy per language (``export
--dtype auto``'s set) and one-thread CPU seconds (``export_quality``). Backends: ort, torch, st
(sentence-transformers with mean pooling + Normalize, batch ``--st-batch-size``, 32 as its own
``encode``; skipped with a note when the package is not installed; without ``--backends`` it
runs on the CPU whenever installed). ``--cpu-settings now,before,unbucketed,spinning`` crosses
the ORT runs with the CPU session and batching settings (``CPU_SETTINGS``: "before" is the CPU
path before issue 21), labelled ``dtype/setting``; every run gets ``speedup_vs_st_fp32``. GPU levers for ORT: ``--packed`` adds an fp16 export in
packed mode (RemovePadding + PackedAttention), ``--seq-bucket N`` pads batches to multiples of N
tokens, ``--sdpa-kernel flash,efficient,...`` restricts the CUDA attention kernels. The
measuring code is ``xretrieve.bench.run`` (shared with ``xretrieve bench``); this script adds
the random models, one process per configuration and the FLOP estimate.
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
    """One configuration, in this process: ``xretrieve.bench.embedding.bench_embedding`` plus the
    FLOP estimate from the padded-token and attention-cell counts computed by the parent."""
    import torch

    from xretrieve.bench.embedding import EmbedSetting, bench_embedding
    from xretrieve.bench.machine import peak_rss_bytes

    load_before = [round(load, 2) for load in os.getloadavg()]
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    if spec["backend"] == "st":
        return {**st_worker(spec, texts), "load_before": load_before}
    from xretrieve.encoding.ort_backend import OrtOptions

    ort_options = None
    if spec["backend"] == "ort":
        ort_options = OrtOptions(
            seq_bucket=spec["seq_bucket"],
            sdpa_kernel=tuple(spec["sdpa_kernel"]),
            **CPU_SETTINGS[spec["cpu_setting"]],
        )
    # An export directory carries its own dtype; torch takes the one asked for.
    dtype = "auto" if spec["backend"] == "ort" else spec["dtype"]
    setting = EmbedSetting(
        spec["backend"], dtype, spec["device"], spec["batch_tokens"], spec["repeats"], ort_options
    )
    best = bench_embedding(spec["model"], setting, texts)
    config = spec["config"]
    # 2 FLOPs per multiply-add; attention scores and their weighted sum: 2 * 2 * s^2 * hidden
    # per sequence and layer.
    flops = 2 * matmul_params(config) * best.padded_tokens + 4 * config["hidden_size"] * (
        config["num_hidden_layers"] * spec["attention_cells"]
    )
    result = {
        "backend": best.backend.value,
        "dtype": spec["label"],
        "device": best.device.value,
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
        "load_before": load_before,
        "load_after": [round(load, 2) for load in os.getloadavg()],
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


def st_worker(spec: dict, texts: list[str]) -> dict:
    """sentence-transformers on the same checkpoint: Transformer -> mean Pooling -> Normalize,
    the text prefix prepended, fp16 by ``.half()`` on CUDA; fastest of ``repeats`` timed
    ``encode`` calls after a warm-up on 512 texts."""
    import time

    import torch
    from sentence_transformers import SentenceTransformer, models

    from xretrieve.bench.machine import peak_rss_bytes

    device = spec["device"]
    word = models.Transformer(spec["checkpoint"], max_seq_length=spec["max_length"])
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pooling, models.Normalize()], device=device)
    if spec["dtype"] == "fp16":
        model.half()
    prefixed = [spec["text_prefix"] + text for text in texts]
    batch = spec["st_batch_size"]
    model.encode(prefixed[:512], batch_size=batch)
    best = float("inf")
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        model.encode(prefixed, batch_size=batch, convert_to_numpy=True)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    import sentence_transformers

    return {
        "backend": "st",
        "dtype": spec["dtype"],
        "device": device,
        "provider": f"sentence-transformers {sentence_transformers.__version__} batch {batch}",
        "sentences": len(texts),
        "seconds": round(best, 4),
        "sentences_per_s": round(len(texts) / best, 1),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        "load_after": [round(load, 2) for load in os.getloadavg()],
    }


def st_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("sentence_transformers") is not None


def attention_cells(
    checkpoint: Path, texts: list[str], batch_tokens: int, text_prefix: str = ""
) -> int:
    """Sum over batches of ``batch_size * padded_length ** 2``, batched as the encoder does
    (length-sorted windows of ``DEFAULT_WINDOW`` sentences cut by the token budget)."""
    from xretrieve.encoding.batching import padding_stats, plan_batches
    from xretrieve.encoding.encoder import DEFAULT_WINDOW
    from xretrieve.encoding.tokenize import TextTokenizer

    tokenizer = TextTokenizer.from_directory(checkpoint, text_prefix=text_prefix)
    cells = 0
    for start in range(0, len(texts), DEFAULT_WINDOW):
        lengths = tokenizer.tokenize(texts[start : start + DEFAULT_WINDOW]).lengths
        cells += padding_stats(lengths, plan_batches(lengths, batch_tokens))[2]
    return cells


# dtype label -> ExportConfig settings of the ORT export it is run from, or None for the int8
# variants ``export`` does not make, quantised here from the fp32 export for the speed comparison
# (``quantize_int8`` arguments in QUANTISED_HERE): int8-tensor (one scale per matrix; its mean
# cosine to torch is below the int8 bar for multilingual-e5-small, so ``export`` refuses it),
# int8-matmul (per channel, the fused Attention left fp32: what ``export`` made before QAttention)
# and int8-batch (ONNX Runtime's dynamic quantisation as it comes: one activation scale per
# batch, so embeddings depend on their batch mates; what ``export`` made before issue 17).
EXPORTS = {
    "fp32": {"dtype": "fp32"},
    "fp16": {"dtype": "fp16"},
    # What a checkpoint gets on the CPU by default: int8 if it passes the held-out check.
    "auto": {"dtype": "auto", "device": "cpu"},
    "int8": {"dtype": "int8", "int8_per_channel": True},
    "int8-tensor": None,
    "int8-matmul": None,
    "int8-batch": None,
    "fp16-packed": {"dtype": "fp16", "packed": True},
}
QUANTISED_HERE = {
    "int8-tensor": {"per_channel": False},
    "int8-matmul": {"per_channel": True, "attention": False},
    "int8-batch": {"per_channel": True, "batch_independent": False},
}
TORCH_DTYPES = ("fp32", "fp16")
# ``--cpu-settings``: the ONNX Runtime CPU settings a run uses (``OrtOptions`` fields). "now" is
# the library's default; "before" the session and batches of the CPU path before issue 21
# (spinning intra-op threads, batches cut by the token budget alone); the other two change one
# of those levers at a time.
CPU_SETTINGS = {
    "now": {},
    "before": {"cpu_buckets": None, "cpu_spinning": True},
    "unbucketed": {"cpu_buckets": None},
    "spinning": {"cpu_spinning": True},
}


def export_once(
    checkpoint: Path, tmp_dir: Path, label: str, text_prefix: str, exports: dict[str, Path]
) -> tuple[Path, dict]:
    """The export directory for ``label`` and its validation figures against torch fp32."""
    from exporters import ExportConfig, ExportValidationError, export_checkpoint, read_manifest

    out_dir = tmp_dir / f"export-{label}"
    if EXPORTS[label] is not None:
        export_checkpoint(
            checkpoint, out_dir, ExportConfig(text_prefix=text_prefix, **EXPORTS[label])
        )
        manifest = read_manifest(out_dir)
        figures = manifest.validation
        found = {
            "graph_dtype": manifest.dtype.value,
            "validation_mean_cosine": round(figures.mean_cosine, 6),
            "validation_min_cosine": round(figures.min_cosine, 6),
        }
        if manifest.dtype_choice is not None:
            found["dtype_choice"] = {
                key: manifest.dtype_choice[key]
                for key in ("chosen", "worst_language", "worst_drop")
            }
        return out_dir, found
    import shutil

    from exporters import quantize_int8, validate_export

    if "fp32" not in exports:
        exports["fp32"] = export_once(checkpoint, tmp_dir, "fp32", text_prefix, exports)
    fp32_dir = exports["fp32"][0]
    shutil.copytree(fp32_dir, out_dir)
    from exporters.int8_activations import calibration_feeds, calibration_texts

    calibration = calibration_feeds(
        _hf_tokenizer(fp32_dir),
        calibration_texts(),
        text_prefix,
        read_manifest(fp32_dir).max_length,
    )
    quantize_int8(
        fp32_dir / "model.onnx",
        out_dir / "model.onnx",
        calibration=calibration,
        **QUANTISED_HERE[label],
    )
    try:
        figures = validate_export(out_dir, checkpoint, device="cpu").figures
    except ExportValidationError as error:  # judged by fp32's bar: only the figures count
        figures = error.report.figures
    return out_dir, {
        "validation_mean_cosine": round(figures.mean_cosine, 6),
        "validation_min_cosine": round(figures.min_cosine, 6),
        "note": f"{label} quantised here from the fp32 export ({QUANTISED_HERE[label]}); "
        "`export --dtype int8` makes per-channel graphs with QAttention and refuses a mean "
        "cosine below 0.99",
    }


def _hf_tokenizer(export_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(export_dir, local_files_only=True)


def export_quality(
    export_dir: Path, texts: list[str], batch_tokens: tuple[int, int], reference: dict | None
) -> dict:
    """What a dtype costs besides time, for ``--quality``: (1) batch independence: ``texts``
    embedded by the library with its CPU default batches (``batch_tokens[0]``, length buckets)
    and with the budget ``batch_tokens[1]`` alone (no buckets), the lowest per-row cosine and
    the largest difference between the two; (2) top-1 accuracy per language of ``export --dtype auto``'s
    held-out set (``exporters.dtype_choice``), and against ``reference`` (fp32's figures) the
    language that loses most; (3) CPU seconds to embed ``texts`` in one ONNX Runtime thread
    (process time, batches of 64 in input order: a measure of work that other load on the
    machine barely moves, unlike the wall-clock rates)."""
    import time

    import onnxruntime as ort

    from exporters import read_manifest
    from exporters.dtype_choice import embed_texts, heldout_accuracy, read_parallel_set
    from xretrieve.encoding import load_encoder
    from xretrieve.encoding.ort_backend import OrtOptions

    first, second = (
        load_encoder(export_dir, device="cpu", batch_tokens=budget, ort_options=options).encode(
            texts
        )
        for budget, options in zip(batch_tokens, (None, OrtOptions(cpu_buckets=None)), strict=True)
    )
    cosines = (first * second).sum(1) / (
        np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    )
    manifest = read_manifest(export_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    tokenizer = _hf_tokenizer(export_dir)
    accuracy = heldout_accuracy(
        session, tokenizer, read_parallel_set(), manifest.text_prefix, manifest.max_length
    )
    started = time.process_time()
    embed_texts(session, tokenizer, texts, manifest.text_prefix, manifest.max_length)
    cpu_seconds = time.process_time() - started
    quality = {
        "batch_tokens": list(batch_tokens),
        "min_row_cosine_between_budgets": round(float(cosines.min()), 8),
        "max_abs_diff_between_budgets": float(np.abs(first - second).max()),
        "heldout_accuracy": {lang: round(value, 2) for lang, value in accuracy.items()},
        "heldout_mean": round(float(np.mean(list(accuracy.values()))), 3),
    }
    if reference is not None:
        drops = {lang: reference[lang] - value for lang, value in accuracy.items()}
        worst = max(drops, key=drops.__getitem__)
        quality |= {"worst_language": worst, "worst_drop_vs_fp32": round(drops[worst], 2)}
    quality["cpu_seconds_one_thread"] = round(cpu_seconds, 2)
    return quality


def qualities(
    exports: dict[str, tuple[Path, dict]], texts: list[str], batch_tokens: tuple[int, int]
) -> dict[str, dict]:
    """``export_quality`` of every CPU export (fp32 first: the others' held-out reference)."""
    labels = sorted(
        (label for label in exports if "fp16" not in label), key=lambda label: label != "fp32"
    )
    found: dict[str, dict] = {}
    for label in labels:
        reference = found["fp32"]["heldout_accuracy"] if "fp32" in found else None
        found[label] = export_quality(exports[label][0], texts, batch_tokens, reference)
    return found


def load_texts(args: argparse.Namespace) -> list[str]:
    """``--sentences`` texts: the lines of the ``--sentences-file`` files in turn, each distinct
    line once (a line with tabs counts its last field: BUCC's ``id<TAB>text``, the held-out
    set's ``language<TAB>English<TAB>translation``; ``#`` lines are comments), cycled when more
    are asked for; or generated ones."""
    from xretrieve.bench.data import make_sentences

    if not args.sentences_file:
        return make_sentences(args.sentences, args.seed, args.median_tokens, args.sigma)
    lines = list(
        dict.fromkeys(
            line.split("\t")[-1]
            for path in args.sentences_file
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        )
    )
    count = args.sentences or len(lines)
    return [lines[i % len(lines)] for i in range(count)]


def configurations(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[dict]]:
    """``(backend, dtype label, cpu setting)`` runs, and notes on the ones skipped. Without
    ``--backends``: ort and torch, and on the CPU sentence-transformers too when installed."""
    backends = (args.backends or default_backends(args.device)).split(",")
    dtypes = args.dtypes.split(",")
    settings = args.cpu_settings.split(",")
    if args.packed:
        dtypes.append("fp16-packed")
    unknown = (
        [d for d in dtypes if d not in EXPORTS]
        + [b for b in backends if b not in ("ort", "torch", "st")]
        + [c for c in settings if c not in CPU_SETTINGS]
    )
    if unknown:
        raise SystemExit(f"unknown backend or dtype {unknown[0]!r}")
    runs, skipped = [], []
    for backend in backends:
        for dtype in dtypes:
            if backend != "ort" and dtype not in TORCH_DTYPES:
                continue  # int8 and packed graphs exist for ONNX Runtime only
            if backend == "st" and not st_installed():
                skipped.append(
                    {
                        "backend": "st",
                        "dtype": dtype,
                        "skipped": "sentence-transformers is not installed in this environment",
                    }
                )
                continue
            for setting in settings if backend == "ort" else ["now"]:
                runs.append((backend, dtype, setting))
    return runs, skipped


def default_backends(device: str) -> str:
    """ort,torch; on the CPU (the device asked for, or no GPU here) also st when installed."""
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return "ort,torch,st" if on_cpu and st_installed() else "ort,torch"


def run_label(dtype: str, setting: str) -> str:
    """A run's ``dtype`` label in the report: the dtype, and the CPU setting unless "now"."""
    return dtype if setting == "now" else f"{dtype}/{setting}"


def add_ratios(results: list[dict]) -> None:
    """Speed-ups against torch of the same dtype, ORT fp32, sentence-transformers of the same
    dtype and sentence-transformers fp32, where those ran."""
    ok = [r for r in results if "error" not in r and "skipped" not in r]
    rates = {(r["backend"], r["dtype"]): r["sentences_per_s"] for r in ok}
    for result in ok:
        base = result["dtype"].split("/")[0].split("-")[0]
        for key, peer in (
            ("speedup_vs_torch_same_dtype", ("torch", base if base in TORCH_DTYPES else "")),
            ("speedup_vs_ort_fp32", ("ort", "fp32")),
            ("speedup_vs_st_same_dtype", ("st", base if base in TORCH_DTYPES else "")),
        ):
            if peer in rates and (result["backend"], result["dtype"]) != peer:
                result[key] = round(result["sentences_per_s"] / rates[peer], 3)
        # The issue-21 goal: any configuration against sentence-transformers fp32.
        if ("st", "fp32") in rates and result["backend"] != "st":
            result["speedup_vs_st_fp32"] = round(
                result["sentences_per_s"] / rates[("st", "fp32")], 3
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="tiny", help="checkpoint dir, or " + "|".join(RANDOM_SIZES)
    )
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument(
        "--backends", help="ort,torch,st (default: ort,torch, and st on the CPU when installed)"
    )
    parser.add_argument(
        "--dtypes",
        default="fp32,fp16",
        help="fp32,fp16,auto,int8,int8-tensor,int8-matmul,int8-batch",
    )
    parser.add_argument(
        "--cpu-settings",
        default="now",
        help="ORT CPU settings to cross with the dtypes: " + ",".join(CPU_SETTINGS),
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument(
        "--sentences-file",
        type=Path,
        action="append",
        help="real sentences, one per line (repeat for several files)",
    )
    parser.add_argument("--median-tokens", type=float, default=20.0)
    parser.add_argument("--sigma", type=float, default=0.6, help="log-normal shape of the lengths")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="run every configuration R times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers'")
    parser.add_argument("--packed", action="store_true", help="add an fp16 packed-mode ORT run")
    parser.add_argument("--seq-bucket", type=int, default=1, help="ORT: pad batches to N tokens")
    parser.add_argument("--sdpa-kernel", default="", help="ORT CUDA: e.g. flash,efficient")
    parser.add_argument(
        "--quality",
        type=int,
        metavar="BATCH_TOKENS",
        help="also, per ORT export on the CPU: batch independence (the CPU's length buckets "
        "against this budget without them), held-out accuracy per language and one-thread CPU "
        "seconds (export_quality)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch

    from xretrieve.bench.machine import machine_info as machine

    machine_info = machine()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    runs, skipped = configurations(args)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        tmp_dir = Path(tmp)
        text_prefix, torch_model = "", None
        if args.model in RANDOM_SIZES:
            checkpoint = build_random_checkpoint(args.model, tmp_dir / "checkpoint")
        elif args.model == "default":
            from xretrieve.encoding.default_model import DEFAULT_TEXT_PREFIX, default_checkpoint

            checkpoint, text_prefix, torch_model = (
                default_checkpoint(),
                DEFAULT_TEXT_PREFIX,
                "default",
            )
        else:
            checkpoint = Path(args.model)
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
        texts = load_texts(args)
        texts_path = tmp_dir / "texts.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        cells = attention_cells(checkpoint, texts, args.batch_tokens, text_prefix)
        exports: dict[str, tuple[Path, dict]] = {}
        for backend, dtype, _ in runs:
            if backend == "ort" and dtype not in exports:
                exports[dtype] = export_once(checkpoint, tmp_dir, dtype, text_prefix, exports)

        from xretrieve.encoding.tokenize import TextTokenizer

        tokenizer = TextTokenizer.from_directory(checkpoint, text_prefix=text_prefix)
        rounds: dict[tuple[str, str, str], list[dict]] = {run: [] for run in runs}
        for _ in range(args.rounds):
            for backend, dtype, cpu_setting in runs:
                label = run_label(dtype, cpu_setting)
                spec = {
                    "model": str(
                        exports[dtype][0] if backend == "ort" else (torch_model or checkpoint)
                    ),
                    "checkpoint": str(checkpoint),
                    "backend": backend,
                    "dtype": dtype,
                    "label": label,
                    "cpu_setting": cpu_setting,
                    "device": device,
                    "batch_tokens": args.batch_tokens,
                    "repeats": args.repeats,
                    "texts": str(texts_path),
                    "config": config,
                    "attention_cells": cells,
                    "text_prefix": text_prefix,
                    "max_length": tokenizer.max_length,
                    "st_batch_size": args.st_batch_size,
                    "seq_bucket": args.seq_bucket,
                    "sdpa_kernel": [k for k in args.sdpa_kernel.split(",") if k],
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
                    rounds[(backend, dtype, cpu_setting)].append(
                        {"backend": backend, "dtype": label, "error": " | ".join(tail)}
                    )
                else:
                    result = json.loads(run.stdout.strip().splitlines()[-1])
                    if backend == "ort":
                        result.update(exports[dtype][1])
                    rounds[(backend, dtype, cpu_setting)].append(result)
        results = []
        for tries in rounds.values():
            good = [r for r in tries if "error" not in r]
            if not good:
                results.append(tries[-1])
                continue
            best = max(good, key=lambda r: r["sentences_per_s"])
            best["rounds_sentences_per_s"] = [r["sentences_per_s"] for r in good]
            results.append(best)
        add_ratios(results)
        results += skipped
        lengths = tokenizer.tokenize(texts).lengths
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
                "text_prefix": text_prefix,
            },
            "workload": {
                "sentences": len(texts),
                "source": [str(path) for path in args.sentences_file]
                if args.sentences_file
                else "generated",
                "distinct_sentences": len(set(texts)),
                "batch_tokens": args.batch_tokens,
                "token_length_median": float(np.median(lengths)),
                "token_length_mean": round(float(np.mean(lengths)), 2),
                "token_length_p90": float(np.percentile(lengths, 90)),
                "token_length_max": int(lengths.max()),
            },
            "results": results,
        }
        if args.quality is not None:
            report["quality"] = qualities(exports, texts, (args.batch_tokens, args.quality))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
