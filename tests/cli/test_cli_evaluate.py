"""``xretrieve evaluate`` end to end with real tiny checkpoints (ONNX export on CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluation_data import make_dataset
from tiny_models import make_tiny_checkpoint
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.evaluation import LayerEmbeddingCache, ResultsLog


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cli-eval")
    data = make_dataset(root / "data", bucc_langs=("de",), tatoeba_langs=("deu", "swh"),
                        n_tatoeba=30, n_pairs=20, n_noise=20)  # fmt: skip
    base = make_tiny_checkpoint(root / "base", "xlm-roberta", seed=0)
    tuned = make_tiny_checkpoint(root / "tuned", "xlm-roberta", seed=1)
    return root, data, base, tuned


@pytest.fixture(autouse=True)
def _cache(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(setup[0] / "xcache"))


def _evaluate(setup, out: str, *extra: str):
    root, data, base, tuned = setup
    args = ["evaluate", str(tuned), "--baseline", str(base), "--data-dir", str(data),
            "--out", str(root / out), "--device", "cpu", "--resamples", "100", "--no-progress",
            *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_layer_sweep_equals_single_layer_exports(setup) -> None:
    from xretrieve.encoding import load_encoder

    root, data, base, _ = setup
    texts = ["c1 de b", "c2 eng t", "", "un texte un peu plus long " * 8, "c1 de b"]
    sweep = LayerEmbeddingCache(
        root / "sweep", "m", load_encoder(base, device="cpu", layers=(1, 2)), (1, 2)
    )
    for layer in (1, 2):
        single = load_encoder(base, device="cpu", layers=(layer,)).encode(texts)
        np.testing.assert_allclose(sweep.embed(texts, layer), single, atol=1e-5)
    assert sweep.encoded_texts == 4 and sweep.forward_calls == 1


def test_cli_evaluate_matches_bucc_and_tatoeba_commands_and_hits_cache(setup) -> None:
    root, data, base, _ = setup
    result = _evaluate(setup, "out", "--layers", "all")
    assert result.exit_code == 0, result.output
    rows = ResultsLog(root / "out" / "results.jsonl").read()
    assert {r.layer for r in rows} == {1, 2}
    assert (root / "out" / "leaderboard.md").exists()
    assert (root / "out" / "plots" / "per_language_tatoeba.png").exists()

    bucc = CliRunner().invoke(app, ["bucc", "--data-dir", str(data), "--langs", "de",
                                    "--model", str(base), "--device", "cpu", "--json",
                                    "--no-progress"])  # fmt: skip
    assert bucc.exit_code == 0, bucc.output
    expected = json.loads(bucc.stdout)["de"]
    got = {r.metric: r.value for r in rows
           if r.checkpoint == "base" and r.layer == 2 and r.task == "bucc"}  # fmt: skip
    for metric in ("f1", "precision", "recall", "tune_f1"):
        assert got[metric] == pytest.approx(expected[metric], abs=1e-6)
    tatoeba = CliRunner().invoke(app, ["tatoeba", "--data-dir", str(data), "--langs", "deu,swh",
                                       "--model", str(base), "--device", "cpu", "--json",
                                       "--no-progress"])  # fmt: skip
    assert tatoeba.exit_code == 0, tatoeba.output
    expected = json.loads(tatoeba.stdout)
    for lang in ("deu", "swh"):
        got = {r.metric: r.value for r in rows
               if r.checkpoint == "base" and r.layer == 2 and r.lang == lang}  # fmt: skip
        assert got["accuracy_en2xx"] == pytest.approx(expected[lang]["accuracy_en2xx"], abs=1e-6)
        assert got["accuracy_xx2en"] == pytest.approx(expected[lang]["accuracy_xx2en"], abs=1e-6)

    # Second run into a new directory: every text comes from the embedding cache.
    again = _evaluate(setup, "out-again", "--layers", "all")
    assert again.exit_code == 0, again.output
    assert "encoded 0 new texts" in again.output
    assert (root / "out" / "results.jsonl").read_text() == (
        root / "out-again" / "results.jsonl"
    ).read_text()


def test_cli_evaluate_reports_a_failed_language_and_exits_1(setup) -> None:
    root, data, _, _ = setup
    bad = root / "bad-data"
    make_dataset(bad, bucc_langs=(), tatoeba_langs=("deu", "swh"), n_tatoeba=20)
    (bad / "tatoeba" / "tatoeba.swh-eng.swh").write_bytes(b"\xff\xfe bad utf-8\n")
    tuned = setup[3]
    result = CliRunner().invoke(app, ["evaluate", str(tuned), "--data-dir", str(bad), "--out",
                                      str(root / "out-bad"), "--tasks", "tatoeba", "--device",
                                      "cpu", "--no-progress", "--no-plots"])  # fmt: skip
    assert result.exit_code == 1
    assert "tatoeba/swh" in result.output and "invalid UTF-8" in result.output
    rows = ResultsLog(root / "out-bad" / "results.jsonl").read()
    assert {r.lang for r in rows if r.metric == "accuracy_en2xx"} == {"deu"}


def test_image_text_scores_the_projected_view_of_a_checkpoint_with_a_head(setup, tmp_path) -> None:
    import shutil

    from evaluation_data import write_image_text
    from safetensors.numpy import save_file

    from xretrieve.encoding import load_encoder
    from xretrieve.evaluation.image_text import image_text_recall, read_image_text

    root, _, base, _ = setup
    checkpoint = tmp_path / "multimodal"
    shutil.copytree(base, checkpoint)
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((8, 32)).astype(np.float32)
    save_file({"weight": weight, "bias": np.zeros(8, np.float32)},
              str(checkpoint / "projection.safetensors"))  # fmt: skip
    (checkpoint / "projection.json").write_text(
        json.dumps({"in_dim": 32, "out_dim": 8, "pooling": "mean", "layer": -1})
    )
    data = tmp_path / "data"
    write_image_text(data, ["deu", "eng"], n_images=6, dim=8)
    out = tmp_path / "out"
    args = ["evaluate", str(checkpoint), "--data-dir", str(data), "--tasks", "image-text",
            "--out", str(out), "--device", "cpu", "--resamples", "50", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    got = {(r["lang"], r["metric"]): r["value"] for r in rows}

    encoder = load_encoder(checkpoint, device="cpu", projection=True)
    assert encoder.dim == 8
    for lang in ("deu", "eng"):
        pair = read_image_text(data, lang)
        expected = image_text_recall(
            encoder.encode(pair.captions.texts), pair.image_features, pair.caption_images,
            device="cpu",
        )  # fmt: skip
        assert got[(lang, "t2i_r1")] == pytest.approx(expected.text_to_image[0])
        assert got[(lang, "i2t_r5")] == pytest.approx(expected.image_to_text[1])


def _export(checkpoint, out, *flags: str) -> None:
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(out), "--no-progress", *flags]
    )
    assert result.exit_code == 0, result.output


def test_exports_of_one_checkpoint_and_the_checkpoint_are_scored_apart(setup, tmp_path) -> None:
    """ "Is int8 as good as fp32?": results used to be keyed by the source checkpoint's hash, so
    two exports of one checkpoint (and the checkpoint itself) collided in results.jsonl and the
    leaderboard showed the last one's scores for all, with a gain of +0.00."""
    root, data, base, _ = setup
    models = {
        "checkpoint": base,
        "fp32": tmp_path / "exports" / "fp32",
        "int8": tmp_path / "exports" / "int8",
        "cls": tmp_path / "exports" / "cls",
    }
    _export(base, models["fp32"], "--dtype", "fp32")
    _export(base, models["int8"], "--dtype", "int8")
    _export(base, models["cls"], "--dtype", "fp32", "--pooling", "cls")

    def evaluate(out, *names: str, baseline: str | None = None):
        args = ["evaluate", *(str(models[name]) for name in names), "--data-dir", str(data),
                "--out", str(out), "--device", "cpu", "--resamples", "50", "--no-progress",
                "--no-plots"]  # fmt: skip
        if baseline is not None:
            args += ["--baseline", str(models[baseline])]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        rows = ResultsLog(out / "results.jsonl").read()
        return result, {
            (r.checkpoint, r.task, r.lang, r.metric): r.value for r in rows if r.metric != "error"
        }

    together, values = evaluate(tmp_path / "all", "checkpoint", "int8", "cls", baseline="fp32")
    assert "scored 12 units" in together.stderr  # 4 models x (bucc de, tatoeba deu, swh)
    rows = ResultsLog(tmp_path / "all" / "results.jsonl").read()
    names = {"base": "checkpoint", "fp32": "fp32", "int8": "int8", "cls": "cls"}
    assert {r.checkpoint for r in rows} == set(names)
    assert len({r.store_id for r in rows}) == 4
    for name, model in names.items():  # each scores what it scores alone
        _, alone = evaluate(tmp_path / f"alone-{model}", model)
        assert alone == {key: value for key, value in values.items() if key[0] == name}, name
    accuracy = {
        name: [values[(name, "tatoeba", lang, "accuracy_en2xx")] for lang in ("deu", "swh")]
        for name in names
    }
    assert accuracy["cls"] != accuracy["fp32"]  # other vectors, other scores: a real difference
    board = (tmp_path / "all" / "leaderboard.md").read_text()
    cls_row = next(line for line in board.splitlines() if line.startswith("| cls |"))
    assert "+0.00 [+0.00, +0.00]" not in cls_row


def _refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_out_and_inputs_are_checked_before_anything_is_written(
    setup, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--langs deu,xxx`` used to leave an empty --out; an --out that is a file, read-only, an
    input or a foreign directory is refused in one line, before any export or write."""
    import os
    from pathlib import Path

    root, data, base, _ = setup
    cache = tmp_path / "xcache"
    monkeypatch.setenv("XRETRIEVE_CACHE", str(cache))

    def run(out, *extra: str):
        return CliRunner().invoke(app, ["evaluate", str(base), "--data-dir", str(data), "--out",
                                        str(out), "--device", "cpu", "--no-progress", *extra])  # fmt: skip

    out = tmp_path / "out"
    _refused(run(out, "--langs", "deu,xxx"), "no data for language(s) xxx")
    assert not out.exists()
    (tmp_path / "a-file").write_text("mine")
    _refused(run(tmp_path / "a-file"), "--out must be a directory; this is a file")
    assert (tmp_path / "a-file").read_text() == "mine"
    _refused(run(data), "--out is an input")
    _refused(run(data / "results"), "lies inside the input directory")
    _refused(run(base), "--out is an input")
    _refused(run(base.parent), "--out holds the input")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _refused(run(foreign), "not an earlier evaluate output (no run.json or results.jsonl")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, *a, **k: (
            False if Path(path) == locked and mode & os.W_OK else real(path, mode, *a, **k)
        ),
    )
    _refused(run(locked / "out"), f"the directory {locked} is not writable")
    assert list(locked.iterdir()) == [] and not (data / "results").exists()
    assert not cache.exists(), "the model was exported before the checks"
    # An earlier output with a file evaluate does not write in it is not evaluate's either.
    monkeypatch.undo()
    monkeypatch.setenv("XRETRIEVE_CACHE", str(root / "xcache"))
    done = run(out, "--tasks", "tatoeba", "--langs", "deu", "--resamples", "20", "--no-plots")
    assert done.exit_code == 0, done.output
    assert run(out, "--tasks", "tatoeba", "--langs", "deu", "--resamples", "20").exit_code == 0
    (out / "notes.txt").write_text("mine")
    _refused(run(out, "--tasks", "tatoeba"), "it also holds notes.txt")


def test_no_data_says_where_it_comes_from_and_the_sample_command_works(
    setup, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shlex

    _, _, base, _ = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", str(base), "--data-dir", str(empty), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    _refused(result, "no data for tasks bucc, tatoeba", "bucc2018/{xx}-en.{split}",
             "tatoeba/tatoeba.{xxx}-eng.{xxx,eng}", "google-research/xtreme",
             "download_data.sh")  # fmt: skip
    assert not (tmp_path / "out").exists()
    command = result.stderr.split("on the bundled de-en sample: ", 1)[1].strip()
    words = shlex.split(command)
    assert words[:3] == ["xretrieve", "evaluate", str(base)]
    sample = CliRunner().invoke(app, [*words[1:], "--device", "cpu", "--resamples", "20",
                                      "--no-progress", "--no-plots"])  # fmt: skip
    assert sample.exit_code == 0, sample.output
    rows = ResultsLog(tmp_path / "evaluate-sample" / "results.jsonl").read()
    assert {(r.task, r.lang) for r in rows} == {("bucc", "de")}
    assert {r.metric for r in rows} >= {"f1", "precision", "recall"}
