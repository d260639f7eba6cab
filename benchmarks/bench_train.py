"""Training throughput: xretrieve's trainer vs transformers' ``Trainer`` on the same model, task
(sentence-pair classification), batch size, sequence length, precision and optimizer settings.

Prints one JSON document with tokens/s of each and their ratio, from the duration of every step
after ``--warmup`` (CUDA synchronised; start-up, evaluation and saving excluded): the median step
(robust to other processes taking the CPU now and then) and the mean step. By default every
example is exactly ``--seq-len`` tokens, so both trainers process the same number of tokens per
step whatever order they draw examples in. ``--variable-length`` draws each example's length
uniformly from ``seq-len / 8 .. seq-len`` (both trainers pad each batch to its longest): then
real (non-padding) tokens per second of the timed steps are reported beside padded ones, and
``--group-by-length`` turns on length-grouped batches in both (``sampling.group_by_length`` /
``TrainingArguments(train_sampling_strategy="group_by_length")``). ``--compile`` turns on ``torch.compile`` in both.

    python benchmarks/bench_train.py --model tiny --steps 30                     # CPU, < 2 minutes
    python benchmarks/bench_train.py --model large-random --batch-size 32 \\
        --seq-len 128 --steps 60 --device cuda                                  # XLM-R-large shape, bf16

``--model`` is a random XLM-R size (tiny: 256 wide, 4 layers; base-random: XLM-R base shape;
large-random: XLM-R large shape, both with XLM-R's 250,002-row vocabulary) or a checkpoint folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# name -> (hidden, layers, heads, intermediate, vocab rows)
RANDOM_SIZES = {
    "tiny": (256, 4, 4, 1024, 30000),
    "base-random": (768, 12, 12, 3072, 250002),
    "large-random": (1024, 24, 16, 4096, 250002),
}
WORDS = "the cat dog house tree water city river book car sun moon day night small big red green".split()


def build_random_checkpoint(size: str, out_dir: Path, seq_len: int) -> Path:
    """A random XLM-R of ``size`` with the tiny test tokenizer; the embedding matrix is grown to
    the real vocabulary size so that embedding gradients and optimizer state cost what they do."""
    import torch
    from transformers import AutoModel

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tiny_checkpoint

    hidden, layers, heads, intermediate, vocab = RANDOM_SIZES[size]
    make_tiny_checkpoint(
        out_dir,
        "xlm-roberta",
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        max_length=max(512, seq_len),
    )
    model = AutoModel.from_pretrained(out_dir)
    torch.manual_seed(0)
    model.resize_token_embeddings(vocab, mean_resizing=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def write_pairs(path: Path, n: int, seq_len: int, variable: bool) -> None:
    """Pairs long enough to be truncated to exactly ``seq_len`` tokens (every word of the test
    tokenizer is one token), or with ``variable`` of ``seq_len / 8 .. seq_len`` tokens."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            words = seq_len if not variable else rng.randint(max(2, seq_len // 16), seq_len // 2)
            a = " ".join(rng.choice(WORDS) for _ in range(words))
            b = " ".join(rng.choice(WORDS) for _ in range(words))
            handle.write(json.dumps({"text_a": a, "text_b": b, "label": i % 3}) + "\n")


class BatchTokens:
    """Real and padded tokens of each collated batch, in order (batch k feeds step k + 1)."""

    def __init__(self) -> None:
        self.real: list[int] = []
        self.padded: list[int] = []

    def add(self, attention_mask) -> None:  # noqa: ANN001 - a (batch, seq) tensor
        self.real.append(int(attention_mask.sum()))
        self.padded.append(attention_mask.numel())

    def timed(self, args: argparse.Namespace) -> tuple[int, int]:
        """Tokens of the timed steps (warmup + 1 .. steps)."""
        span = slice(args.warmup, args.steps)
        return sum(self.real[span]), sum(self.padded[span])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_times(marks: dict[int, float], args: argparse.Namespace) -> list[float]:
    """Seconds of each timed step, from the end-of-step timestamps."""
    steps = range(args.warmup, args.steps + 1)
    return [marks[step + 1] - marks[step] for step in steps[:-1]]


def run_xretrieve(
    checkpoint: Path, data: Path, out: Path, args: argparse.Namespace, tokens: BatchTokens
) -> list[float]:
    from xretrieve.trainer import Trainer, config_from_dict
    from xretrieve.trainer.tasks.classification import PairClassificationTask

    config = config_from_dict(
        {
            "base": str(checkpoint),
            "output_dir": str(out),
            "max_length": args.seq_len,
            "seed": 0,
            "tasks": [
                {
                    "name": "pairs",
                    "type": "pair_classification",
                    "train": str(data),
                    "labels": ["0", "1", "2"],
                }
            ],
            "optim": {
                "max_steps": args.steps,
                "batch_size": args.batch_size,
                "learning_rate": 1e-5,
                "weight_decay": 0.01,
                "warmup_steps": 0,
                "max_grad_norm": 1.0,
                "precision": args.precision,
            },
            "sampling": {"group_by_length": args.group_by_length},
            "compile": args.compile,
            "evaluation": {"eval_every": args.steps, "log_every": args.steps, "keep_last": 1},
        }
    )
    marks: dict[int, float] = {}

    def progress(stage: str, done: int, total: int | None) -> None:
        if done >= args.warmup:
            _sync(args.device)
            marks[done] = time.perf_counter()

    collate = PairClassificationTask.collate

    def counted(self, features, train):  # noqa: ANN001, ANN202
        batch = collate(self, features, train)
        if train:
            tokens.add(batch["attention_mask"])
        return batch

    PairClassificationTask.collate = counted  # type: ignore[method-assign]
    try:
        Trainer(config, device=args.device, progress=progress).train()
    finally:
        PairClassificationTask.collate = collate  # type: ignore[method-assign]
    return step_times(marks, args)


def run_hf_trainer(
    checkpoint: Path, data: Path, out: Path, args: argparse.Namespace, tokens: BatchTokens
) -> list[float]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    encoded = tokenizer(
        [r["text_a"] for r in rows],
        [r["text_b"] for r in rows],
        truncation=True,
        max_length=args.seq_len,
        return_token_type_ids=False,
    )
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": r["label"]}
        for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], rows, strict=True)
    ]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=3)
    marks: dict[int, float] = {}

    class Timer(TrainerCallback):
        def on_step_end(self, training_args, state, control, **kwargs):
            if state.global_step >= args.warmup:
                _sync(args.device)
                marks[state.global_step] = time.perf_counter()

    cuda = args.device.startswith("cuda")
    training_args = TrainingArguments(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-5,
        weight_decay=0.01,
        warmup_steps=0,
        max_grad_norm=1.0,
        bf16=cuda and args.precision in ("auto", "bf16"),
        fp16=cuda and args.precision == "fp16",
        use_cpu=not cuda,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        torch_compile=args.compile,
        seed=0,
    )
    padding = DataCollatorWithPadding(tokenizer)

    def collator(features):  # noqa: ANN001, ANN202
        batch = padding(features)
        tokens.add(batch["attention_mask"])
        return batch

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[Timer()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the run summary; stdout is for JSON
    trainer.train()
    return step_times(marks, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="random size name or a checkpoint folder")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the best is kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on GPU), fp32, bf16, fp16")
    parser.add_argument("--variable-length", action="store_true", help="lengths seq-len/8..seq-len")
    parser.add_argument("--group-by-length", action="store_true", help="length-grouped batches")
    parser.add_argument("--compile", action="store_true", help="torch.compile in both trainers")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.model in RANDOM_SIZES:
            checkpoint = build_random_checkpoint(args.model, root / "model", args.seq_len)
        else:
            checkpoint = Path(args.model)
        data = root / "pairs.jsonl"
        write_pairs(data, args.batch_size * (args.steps + 1), args.seq_len, args.variable_length)
        times: dict[str, list[float]] = {"hf_trainer": [], "xretrieve": []}
        real_tokens = {name: 0 for name in times}
        padded_tokens = {name: 0 for name in times}
        step_tokens_of: dict[str, list[float]] = {name: [] for name in times}
        for repeat in range(args.repeats):
            for name, run in (("hf_trainer", run_hf_trainer), ("xretrieve", run_xretrieve)):
                tokens = BatchTokens()
                seconds = run(checkpoint, data, root / f"{name}-{repeat}", args, tokens)
                times[name] += seconds
                real, padded = tokens.timed(args)
                real_tokens[name] += real
                padded_tokens[name] += padded
                span = tokens.padded[args.warmup : args.steps]
                step_tokens_of[name] += [float(n) for n in span[: len(seconds)]]
        model_params = sum(
            p.numel()
            for p in torch.nn.Module.parameters(
                __import__("transformers").AutoModel.from_pretrained(checkpoint)
            )
        )
    # The median step is robust to other processes stealing the CPU now and then; the mean is
    # what a whole run would see.
    # Padded tokens per second (what the device computed on): the median of the per-step rates
    # and the timed steps' total over their total time; real tokens: total over total time.
    median = {
        name: float(np.median(np.array(step_tokens_of[name]) / np.array(values)))
        for name, values in times.items()
    }
    mean = {name: padded_tokens[name] / float(np.sum(values)) for name, values in times.items()}
    real = {name: real_tokens[name] / float(np.sum(values)) for name, values in times.items()}
    report = {
        "benchmark": "train_throughput",
        "task": "pair_classification",
        "model": args.model,
        "parameters": model_params,
        "device": args.device
        if not args.device.startswith("cuda")
        else torch.cuda.get_device_name(),
        "precision": args.precision if args.device.startswith("cuda") else "fp32",
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "torch_threads": torch.get_num_threads(),
        "steps_timed_per_trainer": len(times["xretrieve"]),
        "tokens_per_s_median_step": {name: round(value, 1) for name, value in median.items()},
        "tokens_per_s_mean_step": {name: round(value, 1) for name, value in mean.items()},
        "xretrieve_over_hf_trainer_median": round(median["xretrieve"] / median["hf_trainer"], 3),
        "xretrieve_over_hf_trainer_mean": round(mean["xretrieve"] / mean["hf_trainer"], 3),
        "variable_length": args.variable_length,
        "group_by_length": args.group_by_length,
        "compile": args.compile,
        "real_tokens_per_s": {name: round(value, 1) for name, value in real.items()},
        "xretrieve_over_hf_trainer_real_tokens": round(real["xretrieve"] / real["hf_trainer"], 3),
        "padding_fraction": {
            name: round(1 - real_tokens[name] / max(padded_tokens[name], 1), 3) for name in times
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "python": platform.python_version(),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
