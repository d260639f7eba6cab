"""``xretrieve bucc`` and ``xretrieve tatoeba`` through the CLI."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import write_planted_split, write_planted_tatoeba
from typer.testing import CliRunner

from xretrieve.cli.app import app

runner = CliRunner()


@pytest.fixture()
def bucc_root(tmp_path: Path) -> Path:
    for seed, lang in enumerate(("de", "fr")):
        write_planted_split(tmp_path / "data", tmp_path / "emb", "training", lang=lang, seed=seed)
        write_planted_split(
            tmp_path / "data", tmp_path / "emb", "test", lang=lang, seed=10 + seed, n_pairs=25
        )
    return tmp_path


def bucc(root: Path, *args: str):
    return runner.invoke(
        app,
        ["bucc", "--no-progress", "--device", "cpu", "--data-dir", str(root / "data"), *args],
    )


def test_bucc_json_per_language(bucc_root: Path) -> None:
    result = bucc(bucc_root, "--langs", "de,fr", "--emb-dir", str(bucc_root / "emb"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert list(report) == ["de", "fr"]
    for scores in report.values():
        assert {"threshold", "precision", "recall", "f1", "tune_f1", "oracle_f1"} <= set(scores)
        assert scores["tune_f1"] == 100.0 and scores["n_gold"] == 25
        assert scores["recall"] == 100.0 and scores["oracle_f1"] == 100.0


def test_bucc_table(bucc_root: Path) -> None:
    result = bucc(bucc_root, "--langs", "de", "--emb-dir", str(bucc_root / "emb"))
    assert result.exit_code == 0, result.output
    assert "BUCC 2018 (training -> test)" in result.stdout and "oracle_f1" in result.stdout


def test_bucc_with_an_encoder_embeds_each_distinct_text_once(bucc_root: Path, monkeypatch) -> None:
    from xretrieve.formats import read_bucc_split

    table = {}
    for split in ("training", "test"):
        corpus = read_bucc_split(bucc_root / "data", "de", split)
        for side, name in ((corpus.src, "de"), (corpus.tgt, "en")):
            matrix = np.load(bucc_root / "emb" / "bucc2018" / f"de-en.{split}.{name}.npy")
            table |= dict(zip(side.texts, matrix.astype(np.float32), strict=True))
    calls = []

    class Encoder:
        name, dim = "fake", 32

        def encode(self, texts, progress=None):
            calls.append(len(texts))
            return np.stack([table[text] for text in texts])

    fake = types.SimpleNamespace(load_encoder=lambda model=None, **_: Encoder())
    monkeypatch.setitem(sys.modules, "xretrieve.encoding", fake)
    result = bucc(bucc_root, "--langs", "de", "--model", "some/model", "--json")
    assert result.exit_code == 0, result.output
    assert calls == [70, 65, 55, 50]
    assert json.loads(result.stdout)["de"]["tune_f1"] == 100.0


def test_bucc_errors(bucc_root: Path) -> None:
    result = bucc(bucc_root, "--langs", "de,ru", "--emb-dir", str(bucc_root / "emb"))
    assert result.exit_code == 2 and "ru-en.training.ru: file not found" in result.stderr
    result = bucc(bucc_root, "--emb-dir", "x", "--model", "y", "--langs", "de")
    assert result.exit_code == 2 and "either --model or --emb-dir" in result.stderr
    (bucc_root / "emb" / "bucc2018" / "de-en.test.de.npy").unlink()
    result = bucc(bucc_root, "--langs", "de", "--emb-dir", str(bucc_root / "emb"))
    assert result.exit_code == 2 and "de-en.test.de.npy: embeddings file not found" in " ".join(
        result.stderr.split()
    )


def test_tatoeba_json_and_table(tmp_path: Path) -> None:
    for seed, lang in enumerate(("deu", "fra")):
        write_planted_tatoeba(tmp_path / "data", tmp_path / "emb", lang, seed=seed)
    args = ["tatoeba", "--no-progress", "--device", "cpu", "--data-dir", str(tmp_path / "data")]
    args += ["--langs", "deu,fra", "--emb-dir", str(tmp_path / "emb")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {
        lang: {"accuracy_en2xx": 100.0, "accuracy_xx2en": 100.0, "n": 50} for lang in ("deu", "fra")
    }
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Tatoeba accuracy" in result.stdout


def test_tatoeba_errors(tmp_path: Path) -> None:
    write_planted_tatoeba(tmp_path / "data", tmp_path / "emb", "deu")
    np.save(tmp_path / "emb" / "tatoeba" / "tatoeba.deu-eng.eng.npy", np.zeros((49, 16)))
    args = ["tatoeba", "--no-progress", "--data-dir", str(tmp_path / "data"), "--langs", "deu"]
    result = runner.invoke(app, [*args, "--emb-dir", str(tmp_path / "emb")])
    assert result.exit_code == 2 and "has 49 rows but its data file has 50" in result.stderr
    result = runner.invoke(app, [*args[:-1], " , ", "--emb-dir", str(tmp_path / "emb")])
    assert result.exit_code == 2 and "langs names no language" in result.stderr


def test_bucc_reports_every_missing_language_before_any_work(bucc_root: Path, monkeypatch) -> None:
    def no_encoder(*args, **kwargs):
        raise AssertionError("no encoder may be loaded before the data is checked")

    monkeypatch.setitem(
        sys.modules, "xretrieve.encoding", types.SimpleNamespace(load_encoder=no_encoder)
    )
    result = bucc(bucc_root)  # the default --langs de,fr,ru,zh; only de and fr exist
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    for name in ("ru-en.training.ru", "ru-en.test.ru", "zh-en.training.zh", "zh-en.test.zh"):
        assert f"{name}: file not found" in message
    assert "nothing was scored" in message


def test_bucc_reports_every_missing_embeddings_file(bucc_root: Path) -> None:
    for name in ("de-en.test.de.npy", "fr-en.training.en.npy"):
        (bucc_root / "emb" / "bucc2018" / name).unlink()
    result = bucc(bucc_root, "--langs", "de,fr", "--emb-dir", str(bucc_root / "emb"))
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "de-en.test.de.npy: embeddings file not found" in message
    assert "fr-en.training.en.npy: embeddings file not found" in message
