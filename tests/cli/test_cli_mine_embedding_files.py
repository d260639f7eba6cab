"""``mine`` over precomputed embedding files: float16 and float32 alike, bad values refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import write_planted_split
from typer.testing import CliRunner

from xretrieve.cli.app import app

runner = CliRunner()


@pytest.fixture()
def split(tmp_path: Path) -> tuple[Path, Path]:
    write_planted_split(tmp_path / "data", tmp_path / "emb", "test")
    return tmp_path / "data" / "bucc2018", tmp_path / "emb" / "bucc2018"


def mine(data: Path, src_emb: Path, tgt_emb: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "mine", "--no-progress", "--device", "cpu", "--json", "--threshold", "1.0",
            "--src-file", str(data / "de-en.test.de"), "--tgt-file", str(data / "de-en.test.en"),
            "--src-emb", str(src_emb), "--tgt-emb", str(tgt_emb), *extra,
        ],
    )  # fmt: skip


def test_float16_files_mine_like_float32(split, tmp_path: Path) -> None:
    data, emb = split
    src, tgt = np.load(emb / "de-en.test.de.npy"), np.load(emb / "de-en.test.en.npy")
    np.save(tmp_path / "src16.npy", src.astype(np.float16))
    np.save(tmp_path / "tgt16.npy", tgt.astype(np.float16))
    full = mine(data, emb / "de-en.test.de.npy", emb / "de-en.test.en.npy")
    half = mine(data, tmp_path / "src16.npy", tmp_path / "tgt16.npy")
    assert full.exit_code == 0 and half.exit_code == 0, full.output + half.output
    assert json.loads(half.stdout)["pairs"] == json.loads(full.stdout)["pairs"] > 0


@pytest.mark.parametrize(("side", "value"), [("src", np.nan), ("tgt", np.inf)])
def test_non_finite_embeddings_exit_2_naming_file_and_row(split, tmp_path: Path, side, value):
    data, emb = split
    paths = {"src": emb / "de-en.test.de.npy", "tgt": emb / "de-en.test.en.npy"}
    matrix = np.load(paths[side])
    matrix[3, 1] = value
    bad = tmp_path / f"{side}.npy"
    np.save(bad, matrix)
    paths[side] = bad
    result = mine(data, paths["src"], paths["tgt"])
    assert result.exit_code == 2, result.output
    assert f"{bad}: row 3 (line 4 of its data file) holds NaN or infinite" in result.stderr
    assert "Traceback" not in result.output


def test_float16_overflow_is_named(split, tmp_path: Path) -> None:
    data, emb = split
    with np.errstate(over="ignore"):  # beyond float16's 65504
        matrix = (np.load(emb / "de-en.test.en.npy") * 1e6).astype(np.float16)
    np.save(tmp_path / "tgt16.npy", matrix)
    result = mine(data, emb / "de-en.test.de.npy", tmp_path / "tgt16.npy")
    assert result.exit_code == 2 and "float16 overflow" in result.stderr


def test_dimension_mismatch_exit_2(split, tmp_path: Path) -> None:
    data, emb = split
    np.save(tmp_path / "tgt.npy", np.load(emb / "de-en.test.en.npy")[:, :5])
    result = mine(data, emb / "de-en.test.de.npy", tmp_path / "tgt.npy")
    assert result.exit_code == 2 and "tgt.npy" in result.stderr and "dimension" in result.stderr


@pytest.mark.parametrize("size", ["2GB", "512MiB", "1e9"])
def test_gpu_memory_is_parsed_and_reaches_the_search(split, monkeypatch, size: str) -> None:
    from xretrieve.core.sizes import parse_bytes
    from xretrieve.mining import margin

    seen = {}
    real = margin.knn_both_ways

    def spy(*args, **kwargs):
        seen["gpu_memory"] = kwargs["gpu_memory"]
        return real(*args, **kwargs)

    monkeypatch.setattr(margin, "knn_both_ways", spy)
    data, emb = split
    result = mine(data, emb / "de-en.test.de.npy", emb / "de-en.test.en.npy", "--gpu-memory", size)
    assert result.exit_code == 0, result.output
    assert seen["gpu_memory"] == parse_bytes(size)


@pytest.mark.parametrize("size", ["lots", "-3GB", "0", "12 parsecs"])
def test_bad_gpu_memory_exit_2(split, size: str) -> None:
    data, emb = split
    result = mine(data, emb / "de-en.test.de.npy", emb / "de-en.test.en.npy", "--gpu-memory", size)
    assert result.exit_code == 2 and "--gpu-memory" in result.stderr


def test_parse_bytes() -> None:
    from xretrieve.core.sizes import parse_bytes

    assert parse_bytes("16GB") == 16 * 10**9 and parse_bytes("16 GiB") == 16 * 2**30
    assert parse_bytes("2e9") == 2 * 10**9 and parse_bytes("1024") == 1024
    for bad in ("", "GB", "1.5.2G", "nan", "inf", "0.5"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_bucc_and_tatoeba_read_float16_embedding_directories(tmp_path: Path) -> None:
    from mining_fixtures import write_planted_tatoeba

    write_planted_split(tmp_path / "data", tmp_path / "emb", "training", seed=1)
    write_planted_split(tmp_path / "data", tmp_path / "emb", "test", seed=2, n_pairs=25)
    write_planted_tatoeba(tmp_path / "data", tmp_path / "emb", "deu")
    half = tmp_path / "emb16"
    for path in (tmp_path / "emb").rglob("*.npy"):
        target = half / path.relative_to(tmp_path / "emb")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, np.load(path).astype(np.float16))
    reports = {}
    for emb in ("emb", "emb16"):
        for command, lang in (("bucc", "de"), ("tatoeba", "deu")):
            result = runner.invoke(
                app,
                [command, "--no-progress", "--device", "cpu", "--json", "--langs", lang,
                 "--data-dir", str(tmp_path / "data"), "--emb-dir", str(tmp_path / emb)],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            reports[emb, command] = json.loads(result.stdout)
    assert reports["emb16", "bucc"]["de"]["f1"] == reports["emb", "bucc"]["de"]["f1"]
    assert reports["emb16", "tatoeba"] == reports["emb", "tatoeba"]
