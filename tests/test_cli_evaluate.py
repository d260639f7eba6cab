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
