"""The trainer's retrieval check embeds BUCC through the commands' deduplicating path: each
distinct text once, the same scores as encoding every line."""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluation_data import FakeEncoder, write_bucc_split

import xretrieve.encoding
from xretrieve.evaluation.bucc import score_bucc
from xretrieve.formats import read_bucc_split
from xretrieve.mining.margin import MiningConfig
from xretrieve.trainer.config import RetrievalEvalConfig
from xretrieve.trainer.retrieval_check import evaluate_retrieval


@pytest.mark.parametrize("layers", [(2,), (1, 2)])
def test_bucc_texts_are_encoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: tuple[int, ...]
) -> None:
    write_bucc_split(tmp_path, "de", "dev", n_pairs=12, n_noise=6)
    write_bucc_split(tmp_path, "de", "test", n_pairs=10, n_noise=5, offset=100)
    encoder = FakeEncoder(layers=layers, noise=0.3)
    monkeypatch.setattr(xretrieve.encoding, "load_encoder", lambda model, **kwargs: encoder)
    config = RetrievalEvalConfig(
        data_dir=tmp_path, bucc=("de",), bucc_tune_split="dev", bucc_eval_split="test",
        layers=layers,
    )  # fmt: skip
    metrics = evaluate_retrieval(tmp_path / "checkpoint-1", config)

    tune = read_bucc_split(tmp_path, "de", "dev")
    evaluation = read_bucc_split(tmp_path, "de", "test")
    corpora = (tune.src, tune.tgt, evaluation.src, evaluation.tgt)
    lines = sum(len(corpus.texts) for corpus in corpora)
    distinct = sum(len(set(corpus.texts)) for corpus in corpora)
    assert distinct < lines  # each source side repeats one sentence under a second id
    assert encoder.texts_encoded == distinct

    # Scores as if every line had been encoded on its own.
    reference = FakeEncoder(layers=layers, noise=0.3)
    for index, layer in enumerate(layers):
        vectors = [reference.encode_layers(list(corpus.texts))[:, index] for corpus in corpora]
        result = score_bucc(tune, *vectors[:2], evaluation, *vectors[2:], MiningConfig())
        tag = "" if len(layers) == 1 else f"layer{layer}/"
        assert metrics[f"bucc/de/{tag}f1"] == pytest.approx(result.f1)
        assert metrics[f"bucc/de/{tag}precision"] == pytest.approx(result.precision)
        assert metrics[f"bucc/de/{tag}recall"] == pytest.approx(result.recall)
