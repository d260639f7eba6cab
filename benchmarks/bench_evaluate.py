"""End-to-end ``xretrieve.evaluation.evaluate`` of one checkpoint over the BUCC (de, fr, ru, zh)
and XTREME Tatoeba (36 languages) layouts, with generated data and a small random XLM-R.

Measures a cold run (export + encode + score), a warm run into a new output directory (every
text from the embedding cache: scoring only), and a resumed run (nothing left to do). Data are
word-like tokens glued from the model's own vocabulary pieces, so that token counts follow a
realistic distribution (log-normal, median ~25 tokens as in BUCC; the JSON reports the measured
distribution), with the real files' layout and sizes set by flags (Tatoeba: 1000 pairs per
language as in XTREME; BUCC scaled down from ~400k sentences per side). The model is random, so
scores are meaningless; only time and counts are.

    python benchmarks/bench_evaluate.py --out /tmp/bench-eval [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TATOEBA_LANGS = (
    "afr ara ben bul cmn deu ell est eus fin fra heb hin hun ind ita jav jpn kat kaz kor mal "
    "mar nld pes por rus spa swh tam tel tgl tha tur urd vie"
).split()
BUCC_LANGS = ("de", "fr", "ru", "zh")


class TextMaker:
    """Sentences of word-like tokens from the model's own vocabulary pieces
    (``xretrieve.bench.data.make_vocabulary_sentences``), each call with the next seed so
    that every file differs; keeps a sample of what it made for the length report."""

    def __init__(self, checkpoint: Path, median_tokens: float, sigma: float) -> None:
        from transformers import AutoTokenizer

        from xretrieve.bench.data import word_pieces

        tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        self.pieces = word_pieces(list(tokenizer.get_vocab()), tokenizer.all_special_tokens)
        self.median_tokens, self.sigma = median_tokens, sigma
        self.seed = 0
        self.sample: list[str] = []

    def __call__(self, n: int) -> list[str]:
        from xretrieve.bench.data import make_vocabulary_sentences

        self.seed += 1
        texts = make_vocabulary_sentences(
            self.pieces, n, seed=self.seed, median_tokens=self.median_tokens, sigma=self.sigma
        )
        self.sample += texts[:250]
        return texts


def make_data(
    root: Path, make: TextMaker, tatoeba_pairs: int, bucc_sentences: int, bucc_gold: int
) -> None:
    tatoeba = root / "tatoeba"
    tatoeba.mkdir(parents=True, exist_ok=True)
    for lang in TATOEBA_LANGS:
        (tatoeba / f"tatoeba.{lang}-eng.{lang}").write_text(
            "\n".join(make(tatoeba_pairs)) + "\n", encoding="utf-8"
        )
        (tatoeba / f"tatoeba.{lang}-eng.eng").write_text(
            "\n".join(make(tatoeba_pairs)) + "\n", encoding="utf-8"
        )
    bucc = root / "bucc2018"
    bucc.mkdir(parents=True, exist_ok=True)
    for lang in BUCC_LANGS:
        for split in ("training", "test"):
            stem = bucc / f"{lang}-en.{split}"
            src = make(bucc_sentences)
            tgt = make(bucc_sentences)
            Path(f"{stem}.{lang}").write_text(
                "".join(f"{lang}-{i:09d}\t{t}\n" for i, t in enumerate(src)), encoding="utf-8"
            )
            Path(f"{stem}.en").write_text(
                "".join(f"en-{i:09d}\t{t}\n" for i, t in enumerate(tgt)), encoding="utf-8"
            )
            Path(f"{stem}.gold").write_text(
                "".join(f"{lang}-{i:09d}\ten-{i:09d}\n" for i in range(bucc_gold)),
                encoding="utf-8",
            )


def token_lengths(checkpoint: Path, texts: list[str]) -> dict:
    """Token-count distribution of ``texts`` under the model's tokenizer and maximum length."""
    from xretrieve.bench.data import length_summary
    from xretrieve.encoding.tokenize import TextTokenizer

    tokenizer = TextTokenizer.from_directory(checkpoint)
    return length_summary(tokenizer.tokenize(texts).lengths, tokenizer.max_length)


class TimedEncoder:
    """Wraps an encoder and adds up the seconds spent in it."""

    def __init__(self, encoder) -> None:
        self.inner = encoder
        self.name, self.dim, self.layers = encoder.name, encoder.dim, encoder.layers
        self.seconds = 0.0
        self.sentences = 0

    def _timed(self, method, texts, progress):
        start = time.perf_counter()
        out = method(texts, progress)
        self.seconds += time.perf_counter() - start
        self.sentences += len(texts)
        return out

    def encode(self, texts, progress=None):
        return self._timed(self.inner.encode, texts, progress)

    def encode_layers(self, texts, progress=None):
        return self._timed(self.inner.encode_layers, texts, progress)


def run(args: argparse.Namespace) -> dict:
    from tiny_models import make_tiny_checkpoint

    from xretrieve.encoding import load_encoder
    from xretrieve.evaluation import EvaluationConfig, ScoringSettings, evaluate, parse_layers
    from xretrieve.mining.margin import MiningConfig

    root = Path(args.out or tempfile.mkdtemp(prefix="bench-eval-"))
    os.environ["XRETRIEVE_CACHE"] = str(root / "xcache")
    data = root / "data"
    checkpoint = make_tiny_checkpoint(
        root / "model", "xlm-roberta", hidden=args.hidden, layers=args.model_layers,
        heads=args.heads or max(2, args.hidden // 64), intermediate=4 * args.hidden,
    )  # fmt: skip
    make = TextMaker(checkpoint, args.median_tokens, args.sigma)
    make_data(data, make, args.tatoeba_pairs, args.bucc_sentences, args.bucc_gold)
    lengths = token_lengths(checkpoint, make.sample)
    encoders: list[TimedEncoder] = []

    def factory(model, layers):
        encoder = TimedEncoder(
            load_encoder(model, device=args.device, layers=layers, batch_tokens=args.batch_tokens)
        )
        encoders.append(encoder)
        return encoder

    def config(out: str) -> EvaluationConfig:
        return EvaluationConfig(
            models=(str(checkpoint),),
            data_dir=data,
            out_dir=root / out,
            layers=parse_layers(args.layers),
            device=args.device,
            batch_tokens=args.batch_tokens,
            scoring=ScoringSettings(
                resamples=args.resamples,
                device=args.device,
                mining=MiningConfig(device=args.device),
            ),
        )

    phases = {}
    for phase, out in (("cold", "results"), ("warm_cache", "results-warm"), ("resume", "results")):
        encoders.clear()
        start = time.perf_counter()
        summary = evaluate(config(out), encoder_factory=factory)
        seconds = time.perf_counter() - start
        encode_seconds = sum(e.seconds for e in encoders)
        phases[phase] = {
            "seconds": round(seconds, 2),
            "encode_seconds": round(encode_seconds, 2),
            "units_scored": summary.scored_units,
            "units_skipped": summary.skipped_units,
            "texts_encoded": summary.encoded_texts,
            "encoder_calls": summary.forward_calls,
            "failures": len(summary.failures),
        }
    n_sentences = 2 * len(TATOEBA_LANGS) * args.tatoeba_pairs + 2 * 2 * len(BUCC_LANGS) * (
        args.bucc_sentences
    )
    return {
        "device": args.device,
        "cpu_cores": os.cpu_count(),
        "model": f"random XLM-R hidden {args.hidden}, {args.model_layers} layers",
        "layers": args.layers or "last",
        "languages": {"tatoeba": len(TATOEBA_LANGS), "bucc": len(BUCC_LANGS)},
        "sentences_in_data": n_sentences,
        "token_lengths": {
            "generator": f"vocabulary pieces, log-normal median {args.median_tokens}, "
            f"sigma {args.sigma}, clipped to [3, 128]",
            "sample": "up to the first 250 sentences of every generated file",
            **lengths,
        },
        "bootstrap_resamples": args.resamples,
        "phases": phases,
        "out": str(root),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="working directory (default: a new temporary one)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--tatoeba-pairs", type=int, default=1000)
    parser.add_argument("--bucc-sentences", type=int, default=5000, help="per side and split")
    parser.add_argument("--bucc-gold", type=int, default=500)
    parser.add_argument("--median-tokens", type=float, default=25.0, help="BUCC: about 25")
    parser.add_argument("--sigma", type=float, default=0.55, help="log-normal shape of lengths")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--model-layers", type=int, default=4)
    parser.add_argument("--heads", type=int, help="attention heads (default: hidden / 64, >= 2)")
    parser.add_argument("--layers", default=None, help="'all' or indices (default: last)")
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(json.dumps({k: v for k, v in result.items() if k != "phases"}, indent=2))
    print("| phase | wall s | encode s | units scored | units skipped | texts encoded |")
    print("|---|---|---|---|---|---|")
    for phase, p in result["phases"].items():
        print(
            f"| {phase} | {p['seconds']} | {p['encode_seconds']} | {p['units_scored']} | "
            f"{p['units_skipped']} | {p['texts_encoded']} |"
        )


if __name__ == "__main__":
    main()
