"""Phase 3 (``xretrieve xtreme run``) timing: the tiny grid, the trainer's per-task rates, and the
estimated GPU time of phase 3 for one XLM-R-large checkpoint on all nine XTREME tasks.

Prints one JSON document with up to three parts:

- ``grid``: wall time of ``xtreme run`` on the test suite's tiny download (every language of all
  nine tasks, a few examples each) with a tiny random XLM-R: a cold run, then a rerun in the same
  folder (every unit kept); per-unit train / predict seconds from the unit records.
- ``rates``: fine-tuning and prediction throughput of xretrieve's trainer per task type at the
  jiant recipe's lengths (pairs and tagging 256 tokens, QA 384) on synthetic data: optimizer steps
  per second, training examples and padded tokens per second (median step after a warm-up), and
  prediction examples and tokens per second through ``Predictor`` (what ``xtreme run`` predicts
  with). ``--model`` is a random XLM-R shape (``tiny``: 256 wide, 4 layers; ``large-random``: XLM-R
  large's shape and vocabulary) or a checkpoint folder.
- ``estimate``: phase 3 of one checkpoint and one seed: for each task, training tokens (training
  examples x epochs x tokens per example) over the training rate, plus predicted tokens (every
  language's dev and test) over the prediction rate. The rates are those measured here when the
  model is XLM-R large on a GPU (``--estimate-from measured``); otherwise (``anchor``) the training
  rate is ``--gpu-train-tokens`` (default: 56,700 padded tokens/s, xretrieve's trainer on one H200,
  XLM-R-large shape, bf16, 32 x 128, benchmarks/RESULTS.md "Training") and the prediction rate is
  that times the prediction / training token-rate ratio measured here on this machine. Data sizes
  and tokens per example are listed in ``XTREME_SIZES`` with their sources and assumptions.

    python benchmarks/bench_xtreme.py --parts grid,rates,estimate            # CPU, ~3 minutes
    python benchmarks/bench_xtreme.py --parts rates,estimate --model large-random --device cuda \\
        --estimate-from measured                                           # GPU, ~5 minutes
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

WORDS = "the cat dog house tree water city river book car sun moon day night small big red green".split()

# Per task: English training examples, epochs (jiant preset), and examples predicted (every
# language's dev + test), with the average padded tokens per example (XLM-R's tokenizer,
# padding to the longest in a batch). Sizes: Hu et al. 2020 (XTREME), Table 1 and the releases
# (MNLI 392,702; PAWS-X 49,401; UD-POS English train as XTREME builds it ~12.5k sentences (the
# brief's figure); PAN-X 20,000; SQuAD v1.1 87,599 train / 10,570 dev; TyDiQA-GoldP English
# 3,696); dev/test per language as published (XNLI 2,490 / 5,010 x 15; PAWS-X 2,000 / 2,000 x 7;
# PAN-X 10,000 / 10,000 x 40 at most, ~ 7,000 on average assumed; UD-POS ~ 1,000 / ~ 1,500
# sentences x 33 assumed; XQuAD 1,190 x 11; MLQA test 46,461 + dev 4,199 over 7 languages;
# TyDiQA-GoldP 5,077 over 9; BUCC test (the shared task's training data) ~ 2.66 M sentences over
# both sides of 4 pairs, its sample (dev) ~ 0.27 M; Tatoeba 1,000 x 2 x 36). Tokens per example
# are assumptions (XLM-R sentencepiece, ~1.4 tokens per English word; QA: one 384-token window
# per question, the contexts' ~ 250 tokens padded to the batch's longest).
XTREME_SIZES = {
    "xnli": {"train": 392_702, "epochs": 2, "predict": (2_490 + 5_010) * 15, "tokens": 72},
    "pawsx": {"train": 49_401, "epochs": 5, "predict": (2_000 + 2_000) * 7, "tokens": 96},
    "udpos": {"train": 12_500, "epochs": 10, "predict": (1_000 + 1_500) * 33, "tokens": 48},
    "panx": {"train": 20_000, "epochs": 10, "predict": 2 * 7_000 * 40, "tokens": 32},
    "xquad": {"train": 87_599, "epochs": 2, "predict": 10_570 + 1_190 * 11, "tokens": 320},
    "mlqa": {"train": 87_599, "epochs": 2, "predict": 46_461 + 4_199, "tokens": 320},
    "tydiqa": {"train": 3_696, "epochs": 2, "predict": 5_077, "tokens": 320},
    "bucc2018": {"train": 0, "epochs": 0, "predict": 2_660_000 + 270_000, "tokens": 40},
    "tatoeba": {"train": 0, "epochs": 0, "predict": 2 * 1_000 * 36, "tokens": 20},
}
TASK_TYPE = {
    "xnli": "pairs", "pawsx": "pairs", "udpos": "tagging", "panx": "tagging",
    "xquad": "qa", "mlqa": "qa", "tydiqa": "qa", "bucc2018": "sentences", "tatoeba": "sentences",
}  # fmt: skip
# Recipe lengths (jiant: 256 for pairs and tagging, 384 for QA) and synthetic example sizes.
RATE_TASKS = {
    "pairs": {"preset": "pawsx", "max_length": 256, "words": 48},
    "tagging": {"preset": "panx", "max_length": 256, "words": 40},
    "qa": {"preset": "squad", "max_length": 384, "words": 250},
}


def _machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["threads"] = torch.get_num_threads()
    return info


def measure_grid(work: Path) -> dict:
    """Cold run and kept rerun of the tiny nine-task grid (one tiny checkpoint, one seed)."""
    from tiny_models import make_tiny_checkpoint
    from xtreme_fixtures import write_config, write_xtreme

    from xretrieve.xtreme.run import RunRequest, run_xtreme

    checkpoint = make_tiny_checkpoint(work / "tiny", "xlm-roberta")
    request = RunRequest(
        checkpoints=(checkpoint,),
        data_dir=write_xtreme(work / "data"),
        out_dir=work / "out",
        config=write_config(work / "recipes.toml"),
        device="cpu",
    )
    started = time.perf_counter()
    cold = run_xtreme(request)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    warm = run_xtreme(request)
    warm_s = time.perf_counter() - started
    units = {}
    for unit_file in sorted((work / "out" / "units").rglob("unit.json")):
        record = json.loads(unit_file.read_text())
        units[record["task"]] = {k: round(v, 2) for k, v in record["seconds"].items()}
    return {
        "tasks": 9,
        "units_run": len(cold.ran),
        "cold_s": round(cold_s, 2),
        "rerun_s": round(warm_s, 2),
        "rerun_kept": len(warm.kept),
        "unit_seconds": units,
        "all_task_test": cold.grid["splits"]["test"]["rows"][0]["all_task"]["mean"],
    }


def _write_rate_data(path: Path, kind: str, n: int, words: int) -> Path:
    rng = random.Random(0)

    def text(count: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(count))

    if kind == "pairs":
        path.write_text(
            "".join(
                f"{text(words // 2)}\t{text(words // 2)}\t{rng.choice('01')}\n" for _ in range(n)
            ),
            encoding="utf-8",
        )
    elif kind == "tagging":
        tags = ("O", "B-PER", "I-PER", "B-LOC")
        lines = [f"{rng.choice(WORDS)}\t{rng.choice(tags)}" for _ in range(words)]
        path.write_text("".join("\n".join(lines) + "\n\n" for _ in range(n)), encoding="utf-8")
    else:
        data = []
        for i in range(n):
            context = text(words)
            answer = context.split()[words // 2]
            start = context.index(f" {answer} ") + 1
            qa = {
                "id": f"q{i}",
                "question": text(12),
                "answers": [{"text": answer, "answer_start": start}],
            }
            data.append({"paragraphs": [{"context": context, "qas": [qa]}]})
        path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def _step_marks():
    """A dict of step -> time and the progress callback that fills it."""
    marks: dict[int, float] = {}

    def mark(stage: str, done: int, total: int | None) -> None:
        marks[done] = time.perf_counter()

    return marks, mark


def measure_rates(work: Path, model: str, device: str, steps: int, warmup: int, batch: int) -> dict:
    """Training and prediction rates of the trainer per task type (see the module docstring)."""
    from bench_train import RANDOM_SIZES, build_random_checkpoint

    from xretrieve.trainer import Trainer, config_from_dict
    from xretrieve.trainer.predict import Predictor
    from xretrieve.trainer.readers import read_task_file

    if model in RANDOM_SIZES:
        checkpoint = build_random_checkpoint(model, work / model, 512)
    else:
        checkpoint = Path(model)
    rates = {}
    for kind, spec in RATE_TASKS.items():
        n = batch * (steps + 1)
        suffix = ".json" if kind == "qa" else ".tsv"
        data = _write_rate_data(work / f"{kind}{suffix}", kind, n, spec["words"])
        logs = []
        config = config_from_dict(
            {
                "base": str(checkpoint),
                "output_dir": str(work / f"run-{kind}"),
                "max_length": spec["max_length"],
                "tasks": [{"name": kind, "preset": spec["preset"], "train": str(data)}],
                "optim": {"max_steps": steps, "batch_size": batch, "learning_rate": 1e-5},
                "evaluation": {"eval_every": 10**6, "log_every": 1, "keep_last": 1},
            }
        )
        marks, mark = _step_marks()
        result = Trainer(config, device=device, on_log=logs.append, progress=mark).train()
        step_s = statistics.median(marks[i] - marks[i - 1] for i in range(warmup + 1, steps + 1))
        timed = logs[warmup:]
        tokens = statistics.median(log.padded_tokens_per_second for log in timed)
        real = statistics.median(log.tokens_per_second for log in timed)
        predictor = Predictor(result.last_checkpoint, kind, device=device, batch_size=64)
        examples = read_task_file(config.tasks[0], data, predictor.labels or None, None)
        predictor.predict(examples, data)  # warm-up
        started = time.perf_counter()
        predictor.predict(examples, data)
        seconds = time.perf_counter() - started
        predicted_tokens = sum(len(f["input_ids"]) for f in predictor.task.eval_features)
        padding = statistics.median(
            log.padded_tokens_per_second / max(log.tokens_per_second, 1e-9) for log in timed
        )
        rates[kind] = {
            "max_length": spec["max_length"],
            "train_padded_tokens_per_s": round(tokens, 1),
            "train_real_tokens_per_s": round(real, 1),
            "train_steps_per_s": round(1 / step_s, 3),
            "train_examples_per_s": round(batch / step_s, 2),
            "padding_factor": round(padding, 3),
            "predict_tokens_per_s": round(predicted_tokens / seconds, 1),
            "predict_examples_per_s": round(len(examples.examples) / seconds, 2),
            "predict_over_train_tokens": round(predicted_tokens / seconds / tokens, 3),
        }
        shutil.rmtree(work / f"run-{kind}", ignore_errors=True)
    return rates


def estimate(rates: dict, source: str, gpu_train_tokens: float) -> dict:
    """Seconds of phase 3 per task for one checkpoint and one seed (see the module docstring)."""
    ratios = [r["predict_over_train_tokens"] for r in rates.values()]
    ratio = statistics.median(ratios)
    per_task = {}
    for task, size in XTREME_SIZES.items():
        kind = TASK_TYPE[task]
        if source == "measured":
            rate = rates["pairs" if kind == "sentences" else kind]
            train_rate = rate["train_padded_tokens_per_s"]
            predict_rate = rate["predict_tokens_per_s"]
        else:
            train_rate = gpu_train_tokens
            predict_rate = gpu_train_tokens * ratio
        train_s = (
            size["train"] * size["epochs"] * size["tokens"] / train_rate if size["train"] else 0.0
        )
        predict_s = size["predict"] * size["tokens"] / predict_rate
        per_task[task] = {"train_s": round(train_s), "predict_s": round(predict_s)}
    total = sum(v["train_s"] + v["predict_s"] for v in per_task.values())
    return {
        "source": source,
        "gpu_train_tokens_per_s": None if source == "measured" else gpu_train_tokens,
        "predict_over_train_tokens": ratio,
        "per_task_s": per_task,
        "total_s": round(total),
        "total_h": round(total / 3600, 2),
        "sizes": XTREME_SIZES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="grid,rates,estimate")
    parser.add_argument(
        "--model", default="tiny", help="tiny, base-random, large-random or a folder"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--estimate-from", choices=("anchor", "measured"), default="anchor")
    parser.add_argument("--gpu-train-tokens", type=float, default=56_700.0)
    args = parser.parse_args()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    report: dict = {"machine": _machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-xtreme-") as tmp:
        work = Path(tmp)
        if "grid" in parts:
            (work / "grid").mkdir()
            report["grid"] = measure_grid(work / "grid")
        if "rates" in parts or "estimate" in parts:
            (work / "rates").mkdir()
            report["rates"] = measure_rates(
                work / "rates", args.model, args.device, args.steps, args.warmup, args.batch_size
            )
        if "estimate" in parts:
            report["estimate"] = estimate(
                report["rates"], args.estimate_from, args.gpu_train_tokens
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
