"""``xretrieve index build|verify`` and ``xretrieve mine --src-index/--tgt-index`` through the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import write_planted_split
from typer.testing import CliRunner

from xretrieve.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture()
def planted(tmp_path: Path) -> Path:
    write_planted_split(tmp_path / "data", tmp_path / "emb", "test", duplicate_src=True)
    return tmp_path


def paths(root: Path) -> dict[str, str]:
    data, emb = root / "data" / "bucc2018", root / "emb" / "bucc2018"
    return {
        "src": str(data / "de-en.test.de"),
        "tgt": str(data / "de-en.test.en"),
        "gold": str(data / "de-en.test.gold"),
        "src_emb": str(emb / "de-en.test.de.npy"),
        "tgt_emb": str(emb / "de-en.test.en.npy"),
    }


def build(root: Path, *extra: str) -> tuple[Path, Path]:
    p = paths(root)
    for name, emb in (("de", p["src_emb"]), ("en", p["tgt_emb"])):
        result = invoke(
            "index", "build", emb, "--out", str(root / name), "--no-progress", "--shard-rows",
            "25", *extra,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return root / "de", root / "en"


def mine_args(root: Path, *extra: str) -> list[str]:
    p = paths(root)
    return [
        "mine", "--no-progress", "--device", "cpu", "--src-file", p["src"], "--tgt-file",
        p["tgt"], "--gold", p["gold"], "--json", "--threshold", "1.2", *extra,
    ]  # fmt: skip


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_build_then_mine_through_indexes_equals_exact_mining(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    manifest = json.loads((src_dir / "manifest.json").read_text())
    assert manifest["factory"] == "Flat" and manifest["count"] == 71
    assert len(manifest["shards"]) == 3
    p = paths(planted)
    exact = invoke(
        *mine_args(planted, "--k", "4", "--src-emb", p["src_emb"], "--tgt-emb", p["tgt_emb"])
    )
    out = planted / "pairs.tsv"
    indexed = invoke(
        *mine_args(planted, "--k", "4", "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)),
        "--out", str(out),
    )  # fmt: skip
    assert exact.exit_code == 0 and indexed.exit_code == 0, indexed.output
    want, got = json.loads(exact.stdout), json.loads(indexed.stdout)
    assert got.pop("nprobe") == "auto" and got.pop("rescore") is True
    assert got.pop("candidate_factor") == 4
    assert got.pop("out") == str(out)
    assert got == want
    assert len(out.read_text().splitlines()) == want["rows"]


def test_index_k_defaults_to_16(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    result = invoke(*mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["k"] == 16


def test_index_build_too_few_training_points_exit_2_nothing_written(planted: Path) -> None:
    p = paths(planted)
    out = planted / "ivf"
    result = invoke("index", "build", p["src_emb"], "--out", str(out), "--factory", "IVF256,Flat")
    line = one_line_error(result)
    assert "too few training points for IVF256,Flat: 71 (all rows), at least 256 needed" in line
    assert not out.exists() and not list(planted.glob(".ivf*"))


def test_mine_refuses_mismatched_indexes_and_options(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    p = paths(planted)
    np.save(planted / "narrow.npy", np.ones((65, 4), dtype=np.float32))
    assert (
        invoke(
            "index", "build", str(planted / "narrow.npy"), "--out", str(planted / "narrow")
        ).exit_code
        == 0
    )
    result = invoke(
        *mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(planted / "narrow"))
    )
    assert "index dimension 4 differs from" in one_line_error(result)
    # The target index indexes the source file's 71 rows, the target corpus has 65 lines.
    result = invoke(*mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(src_dir)))
    assert "the index has 71 rows but" in one_line_error(result)
    result = invoke(*mine_args(planted, "--src-index", str(src_dir)))
    assert "give both --src-index and --tgt-index" in one_line_error(result)
    result = invoke(
        *mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)),
        "--src-emb", p["src_emb"], "--tgt-emb", p["tgt_emb"],
    )  # fmt: skip
    assert "replace --src-emb/--tgt-emb" in one_line_error(result)
    for extra in (["--text-prefix", "query: "], ["--model", "some-model"]):
        result = invoke(
            *mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)), *extra
        )
        assert "--text-prefix" in one_line_error(result)


def test_mine_with_a_truncated_shard_exit_2_and_no_output(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    shard = tgt_dir / "shard-00001.faiss"
    shard.write_bytes(shard.read_bytes()[:100])
    out = planted / "pairs.tsv"
    result = invoke(
        *mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)),
        "--out", str(out),
    )  # fmt: skip
    assert "shard-00001.faiss: index shard has 100 bytes" in one_line_error(result)
    assert not out.exists()


def test_index_verify_hashes_the_source_files(planted: Path) -> None:
    src_dir, _ = build(planted)
    assert invoke("index", "verify", str(src_dir)).exit_code == 0
    src_emb = Path(paths(planted)["src_emb"])
    matrix = np.load(src_emb)
    matrix[0, 0] += 1.0  # same shape and size, other content
    np.save(src_emb, matrix)
    assert "SHA-256 differs" in one_line_error(invoke("index", "verify", str(src_dir)))


def test_ray_option_without_ray_gives_the_install_command(planted: Path, monkeypatch) -> None:
    src_dir, tgt_dir = build(planted)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = invoke(
        *mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)),
        "--ray", "local",
    )  # fmt: skip
    assert "pip install 'xretrieve[distributed]'" in one_line_error(result)
