"""xretrieve.bench.run and `xretrieve bench` on a tiny random model and tiny kNN sizes."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from xretrieve.bench import data, embedding, knn_margin
from xretrieve.cli.app import app
from xretrieve.core.devices import torch_cuda_available
from xretrieve.core.errors import XRetrieveError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    # ORT exports of the tiny checkpoint go to a per-session cache, never ~/.cache.
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path_factory.getbasetemp() / "bench-cache"))


def test_make_sentences_lengths_and_determinism() -> None:
    texts = data.make_sentences(500, seed=3)
    assert texts == data.make_sentences(500, seed=3)
    words = np.array([len(text.split()) for text in texts])
    # lengths (with the two special tokens) are clipped to [3, 128], median near 20
    assert words.min() >= 1 and words.max() <= 126
    assert 14 <= np.median(words) + 2 <= 26


@pytest.mark.parametrize("arch", ["xlmr", "bert"])
def test_vocabulary_sentences_follow_the_drawn_lengths(arch, request) -> None:
    from transformers import AutoTokenizer

    from xretrieve.encoding.tokenize import TextTokenizer

    checkpoint = request.getfixturevalue(f"tiny_{arch}_checkpoint")
    hf = AutoTokenizer.from_pretrained(checkpoint)
    pieces = data.word_pieces(list(hf.get_vocab()), hf.all_special_tokens)
    assert not set(pieces.starts) & {"<s>", "[CLS]", "<pad>", "[PAD]"}
    assert all(piece.isalpha() for piece in pieces.starts + pieces.continuations)
    texts = data.make_vocabulary_sentences(pieces, 1500, seed=4, median_tokens=25)
    assert texts == data.make_vocabulary_sentences(pieces, 1500, seed=4, median_tokens=25)
    tokenizer = TextTokenizer.from_directory(checkpoint)
    tokenized = tokenizer.tokenize(texts)
    summary = data.length_summary(tokenized.lengths, tokenizer.max_length)
    # The old generator (letters and digits split into one token each) put most sentences at
    # the 128-token cap; these follow the log-normal: median 25, a long tail, few at the cap.
    assert 22 <= summary["median"] <= 28 and summary["p90"] < 64
    assert summary["fraction_at_max_length"] < 0.01 and summary["texts"] == 1500
    assert hf.unk_token_id not in {i for row in tokenized.ids for i in row}


def test_length_summary_by_hand() -> None:
    summary = data.length_summary(np.array([3, 10, 20, 128, 128]), 128)
    assert summary["median"] == 20 and summary["mean"] == 57.8 and summary["max"] == 128
    assert summary["fraction_at_max_length"] == 0.4


def test_word_pieces_needs_both_kinds() -> None:
    with pytest.raises(XRetrieveError, match="no word-opening or no word-continuing"):
        data.word_pieces(["\u2581the", "\u2581cat"])
    pieces = data.word_pieces(["\u2581the", "s", "\u2581", "<s>", "1"], ["<s>"])
    assert pieces == data.WordPieces(("the",), ("s",))


def test_bench_embedding_sane_numbers(tiny_xlmr_checkpoint) -> None:
    texts = data.make_sentences(120, seed=1)
    seen: list[int] = []
    result = embedding.bench_embedding(
        tiny_xlmr_checkpoint,
        embedding.EmbedSetting("torch", "fp32", device="cpu", batch_tokens=256),
        texts,
        progress=lambda stage, done, total: seen.append(done),
    )
    assert result.sentences == 120 and result.dim == 32 and result.device == "cpu"
    assert result.batches > 1 and seen[-1] == 120
    assert 0 < result.real_tokens <= result.padded_tokens
    assert result.padding_efficiency == pytest.approx(result.real_tokens / result.padded_tokens)
    assert result.sentences_per_s == pytest.approx(120 / result.seconds)
    assert 0 < result.batch_p50_ms <= result.batch_p95_ms <= result.seconds * 1000
    assert result.peak_rss_mb > 10 and result.peak_gpu_mb is None


def test_bench_knn_margin_agrees_with_numpy_peer() -> None:
    src, tgt = data.make_knn_data(300, 250, 16, seed=0)
    np.testing.assert_allclose(np.linalg.norm(src, axis=1), 1.0, rtol=1e-5)
    methods = knn_margin.knn_methods()
    assert list(methods)[:3] == ["numpy", "faiss_cpu", "torch_cpu"]
    results = knn_margin.bench_knn_margin(src, tgt, 4, methods, repeats=2)
    for result in results.values():
        # half of the smaller side are planted pairs: mining finds at least those
        assert result.pairs >= 125 and result.pair_agreement >= 0.999
        assert len(result.runs) == 2 and result.seconds > 0
        assert result.knn_seconds + result.margin_seconds == pytest.approx(result.seconds)
    ratios = knn_margin.speedups(results, "faiss_cpu")
    assert ratios["faiss_cpu"] == pytest.approx(1.0)


def test_cli_bench_json_and_plot(tiny_xlmr_checkpoint, tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(data.make_sentences(80, seed=2)) + "\n", encoding="utf-8")
    plot = tmp_path / "bench.png"
    result = CliRunner().invoke(
        app,
        [
            "bench", str(tiny_xlmr_checkpoint), "--backends", "ort,torch", "--dtypes", "fp32",
            "--batch-tokens", "512", "--batch-tokens", "2048", "--corpus", str(corpus),
            "--sentences", "60", "--knn-size", "200", "--json", "--no-progress",
            "--plot", str(plot),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"model", "machine", "workload", "embedding", "embedding_errors", "knn"}
    assert report["workload"]["sentences"] == 60 and report["workload"]["source"] == str(corpus)
    settings = {(r["backend"], r["dtype"], r["batch_tokens"]) for r in report["embedding"]}
    assert settings == {(b, "fp32", n) for b in ("ort", "torch") for n in (512, 2048)}
    for entry in report["embedding"]:
        for key in ("sentences_per_s", "tokens_per_s", "batch_p50_ms", "batch_p95_ms",
                    "padding_efficiency", "peak_rss_mb", "peak_gpu_mb", "provider",
                    "speedup_vs_torch_same_dtype"):  # fmt: skip
            assert key in entry
        assert entry["sentences"] == 60 and entry["sentences_per_s"] > 0
    assert report["embedding_errors"] == []
    knn = report["knn"]
    assert knn["rows"] == 200 and knn["dim"] == 32 and knn["k"] == 4
    methods = [r["method"] for r in knn["results"]]
    assert methods[:2] == ["faiss_cpu", "torch_cpu"]
    if not torch_cuda_available():
        # sentence-transformers' semantic_search is the peer wherever the package is installed
        # (the test extra installs it for the export parity tests).
        peers = ["semantic_search"] if importlib.util.find_spec("sentence_transformers") else []
        assert methods == ["faiss_cpu", "torch_cpu", *peers]
    assert knn["results"][0]["speedup_vs_faiss_cpu"] == 1.0
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_bench_table_without_knn(tiny_xlmr_checkpoint) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", str(tiny_xlmr_checkpoint), "--backends", "torch", "--sentences", "20",
         "--knn-size", "0", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the table wraps at the runner's 80 columns: look for words, not whole cells
    assert "Embedding" in result.stdout and "torch" in result.stdout and "fp32" in result.stdout
    assert "kNN" not in result.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [("--backends", "ort,tensorflow"), ("--dtypes", "bf16"), ("--backends", ",")],
)
def test_cli_bench_bad_list_exits_2(tiny_xlmr_checkpoint, option: str, value: str) -> None:
    result = CliRunner().invoke(app, ["bench", str(tiny_xlmr_checkpoint), option, value])
    assert result.exit_code == 2
    assert f"invalid {option}" in result.stderr and "comma-separated list" in result.stderr
