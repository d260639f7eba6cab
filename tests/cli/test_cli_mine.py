"""``xretrieve mine`` through the CLI, with precomputed embeddings and a fake encoder."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import file_args, write_planted_split
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.formats import read_bucc_split

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["mine", "--no-progress", "--device", "cpu", *args])


def test_files_with_embeddings_threshold_gold_and_out(planted_bucc) -> None:
    root, split = planted_bucc
    out = root / "pairs.tsv"
    gold = root / "data" / "bucc2018" / "de-en.test.gold"
    result = invoke(
        *file_args(root), "--threshold", "1.65", "--gold", str(gold), "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # The first gold source's text also occurs under the id "de-test-dup": mined once, scored as
    # no id (BUCC rule), so that gold pair is missed; --out lists the pair under both ids.
    assert summary["pairs"] == 40 and summary["rows"] == 41
    assert summary["precision"] == 100.0 and summary["recall"] == pytest.approx(97.5)
    assert summary["threshold"] == 1.65 and summary["threshold_source"] == "given"
    assert summary["src_sentences"] == 71 and summary["src_distinct"] == 70
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 41 and not lines[0].startswith("#")
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 5 for row in rows)
    scores = [float(row[0]) for row in rows]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 1.65
    corpus = read_bucc_split(root / "data", "de", "test").src
    dup_text = corpus.texts[corpus.ids.index("de-test-dup")]
    original = next(
        i
        for i, t in zip(corpus.ids, corpus.texts, strict=True)
        if t == dup_text and i != "de-test-dup"
    )
    partner = next(t for s, t in split.gold if s == original)
    assert {(row[1], row[2]) for row in rows} == split.gold | {("de-test-dup", partner)}


def test_plain_text_files_give_three_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = rng.standard_normal((5, 8)).astype(np.float32)
    tgt = src[::-1] + 0.01
    (tmp_path / "a.txt").write_text("".join(f"eins {i}\n" for i in range(5)), encoding="utf-8")
    (tmp_path / "b.txt").write_text("".join(f"one {4 - i}\n" for i in range(5)), encoding="utf-8")
    np.save(tmp_path / "a.npy", src)
    np.save(tmp_path / "b.npy", tgt)
    out = tmp_path / "out.tsv"
    result = invoke(
        "--src-file", str(tmp_path / "a.txt"), "--tgt-file", str(tmp_path / "b.txt"),
        "--src-emb", str(tmp_path / "a.npy"), "--tgt-emb", str(tmp_path / "b.npy"),
        "--margin", "absolute", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5 and all(len(row) == 3 for row in rows)
    assert all(row[1].split()[1] == row[2].split()[1] for row in rows)
    assert "first 5 pairs" in result.stdout and "threshold_source" in result.stdout


def test_tune_split_from_data_and_embedding_dirs(planted_bucc) -> None:
    root, _ = planted_bucc
    result = invoke(
        "--data-dir", str(root / "data"), "--emb-dir", str(root / "emb"),
        "--split", "test", "--tune-split", "training", "--mode", "intersect", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["threshold_source"] == "tuned" and summary["tune_f1"] == 100.0
    # Recall loses the gold pair of the duplicated text; one unrelated test pair scores above the
    # threshold tuned on the training split.
    assert summary["recall"] == 97.5 and summary["precision"] == 97.5 and summary["gold"] == 40
    assert summary["mode"] == "intersect" and summary["input"] == "de-en test"


class FakeEncoder:
    """Looks texts up in a table; counts calls."""

    name = "fake"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dim = next(iter(table.values())).shape[0]
        self.calls: list[int] = []

    def encode(self, texts, progress=None) -> np.ndarray:
        self.calls.append(len(texts))
        return np.stack([self.table[text] for text in texts])


def test_default_mines_the_bundled_sample_with_the_default_model(planted_bucc, monkeypatch) -> None:
    root, split = planted_bucc
    sample = root / "sample"
    planted_sample = write_planted_split(sample, None, "sample", seed=3)
    corpus = read_bucc_split(sample, "de", "sample")
    table = dict(zip(corpus.src.texts, planted_sample.src_emb, strict=True)) | dict(
        zip(corpus.tgt.texts, planted_sample.tgt_emb, strict=True)
    )
    encoder = FakeEncoder(table)
    requested = []

    def load_encoder(model=None, **_):
        requested.append(model)
        return encoder

    monkeypatch.setitem(
        sys.modules, "xretrieve.encoding", types.SimpleNamespace(load_encoder=load_encoder)
    )
    monkeypatch.setattr("xretrieve.mining.bitext.sample_data_dir", lambda: sample)
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert requested == [None] and encoder.calls == [70, 65]
    assert summary["threshold"] == 1.05 and summary["threshold_source"] == "default"
    assert summary["input"] == "de-en sample" and summary["recall"] == 100.0


def test_bundled_sample_exists() -> None:
    from xretrieve.mining.bitext import sample_data_dir

    split = read_bucc_split(sample_data_dir(), "de", "sample")
    assert split.gold is not None and len(split.src) > 0


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d, e: (d / "de-en.test.en").unlink(), "de-en.test.en: file not found"),
        # --src-file/--tgt-file sniff the format from the first line: TSV, then strict per line.
        (
            lambda d, e: (d / "de-en.test.en").write_text("e1\tok\ne2 no tab\n"),
            "de-en.test.en:2: expected 'id<TAB>sentence', found no tab",
        ),
        (lambda d, e: np.save(e / "de-en.test.en.npy", np.zeros((3, 32))), "has 3 rows"),
        (lambda d, e: np.save(e / "de-en.test.en.npy", np.zeros((65, 8))), "has dimension 8"),
        (lambda d, e: (d / "de-en.test.gold").write_text("nope\tx\n"), "id 'nope' does not exist"),
        (lambda d, e: (d / "de-en.test.de").write_bytes(b"a\t\xff\n"), "de-en.test.de:1: invalid"),
    ],
)
def test_bad_input_exits_2_naming_the_file_and_writes_nothing(
    planted_bucc, mutate, fragment
) -> None:
    root, _ = planted_bucc
    mutate(root / "data" / "bucc2018", root / "emb" / "bucc2018")
    out = root / "pairs.tsv"
    gold = root / "data" / "bucc2018" / "de-en.test.gold"
    result = invoke(*file_args(root), "--gold", str(gold), "--out", str(out))
    assert result.exit_code == 2
    assert fragment in " ".join(result.stderr.split())
    assert not out.exists() and not list(root.glob(".pairs.tsv*"))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--src-file", "a.txt"], "give both --src-file and --tgt-file"),
        (["--threshold", "1", "--tune-split", "training"], "either --threshold or --tune-split"),
        (["--tune-split", "training"], "give --data-dir"),
        (["--data-dir", ".", "--tgt", "fr"], "use --tgt en"),
    ],
)
def test_conflicting_flags(args: list[str], fragment: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and fragment in result.stderr


def test_tsv_line_without_tab_in_data_dir(planted_bucc) -> None:
    root, _ = planted_bucc
    path = root / "data" / "bucc2018" / "de-en.test.en"
    path.write_text("e1\tok\ne2 no tab\n", encoding="utf-8")
    result = invoke("--data-dir", str(root / "data"), "--emb-dir", str(root / "emb"))
    assert result.exit_code == 2
    assert "de-en.test.en:2: expected 'id<TAB>sentence'" in " ".join(result.stderr.split())


def test_error_messages_are_printed_literally(tmp_path: Path) -> None:
    # A rich-markup-looking file name must reach stderr unchanged, not be parsed as a style tag.
    missing = tmp_path / "[[tasks]].txt"
    result = CliRunner().invoke(
        app, ["mine", "--src-file", str(missing), "--tgt-file", str(missing)]
    )
    assert result.exit_code == 2
    assert "[[tasks]].txt" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_non_finite_threshold_is_refused(planted_bucc, value: str) -> None:
    root, _ = planted_bucc
    result = invoke(*file_args(root), "--threshold", value, "--json")
    assert result.exit_code == 2, result.output
    assert "finite number" in result.output
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout


def _strict_json(text: str):
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_never_holds_nan_or_infinity(capsys: pytest.CaptureFixture[str]) -> None:
    from xretrieve.cli.common import print_json

    print_json({"f1": float("nan"), "rows": [1.5, float("inf"), {"low": -float("inf")}], "k": 4})
    assert _strict_json(capsys.readouterr().out) == {
        "f1": None,
        "rows": [1.5, None, {"low": None}],
        "k": 4,
    }


def test_no_bundled_sample_for_other_pairs_says_what_is_bundled() -> None:
    result = invoke("--src", "fr", "--tgt", "en")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "no bundled sample for fr-en (only de-en is bundled)" in message
    assert "--src-file" in message and "--data-dir" in message


def test_embeddings_without_their_texts_do_not_fall_back_to_the_sample(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.eye(4, dtype=np.float32))
    np.save(tmp_path / "b.npy", np.eye(4, dtype=np.float32))
    result = invoke("--src-emb", str(tmp_path / "a.npy"), "--tgt-emb", str(tmp_path / "b.npy"))
    assert result.exit_code == 2
    assert "--src-emb/--tgt-emb need the texts they embed" in " ".join(result.stderr.split())


def test_an_out_that_is_an_input_is_refused_and_left_intact(planted_bucc, tmp_path: Path) -> None:
    """``--out dc.txt`` with ``--src-file dc.txt`` used to leave the sentences file empty."""
    root, _ = planted_bucc
    data, emb = root / "data" / "bucc2018", root / "emb" / "bucc2018"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    files = [p for p in (*data.iterdir(), *emb.iterdir()) if p.is_file()]
    before = {path: path.read_bytes() for path in files}
    gold = data / "de-en.test.gold"
    cases = [
        ([*file_args(root)], data / "de-en.test.de", "--out is an input"),
        ([*file_args(root)], emb / "de-en.test.en.npy", "--out is an input"),
        ([*file_args(root), "--gold", str(gold)], gold, "--out is an input"),
        (
            [
                "--data-dir",
                str(root / "data"),
                "--emb-dir",
                str(root / "emb"),
                "--tune-split",
                "training",
            ],
            data / "de-en.training.en",
            "--out is an input",
        ),  # fmt: skip
        (
            ["--data-dir", str(root / "data"), "--emb-dir", str(root / "emb")],
            emb / "de-en.test.de.npy",
            "--out is an input",
        ),
        (
            [
                "--src-file",
                str(data / "de-en.test.de"),
                "--tgt-file",
                str(data / "de-en.test.en"),
                "--model",
                str(model),
            ],
            model / "pairs.tsv",
            "lies inside the input directory",
        ),  # fmt: skip
    ]
    for args, out, fragment in cases:
        result = invoke(*args, "--out", str(out))
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr and str(out) in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in files} == before
    assert not (model / "pairs.tsv").exists()
