"""``xretrieve index build|verify`` and ``xretrieve mine --src-index/--tgt-index`` through the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import split_files
from typer.testing import CliRunner

from xretrieve.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture()
def planted(planted_bucc) -> Path:
    return planted_bucc[0]


def paths(root: Path) -> dict[str, str]:
    return {name: str(path) for name, path in split_files(root).items()}


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
    assert got.pop("nprobe") is None and got.pop("rescore") is True  # Flat: no lists
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


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_mining_refuses_a_source_re_embedded_since_the_build(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    src_emb = Path(paths(planted)["src_emb"])
    other = np.load(src_emb)[::-1].copy()  # another model's vectors: same shape and size
    np.save(src_emb, other)
    out = planted / "pairs.tsv"
    result = invoke(
        *mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)),
        "--out", str(out),
    )  # fmt: skip
    line = one_line_error(result)
    assert "de-en.test.de.npy: SHA-256 differs from the index manifest's record" in line
    assert "rebuild the index" in line and not out.exists()


def test_mining_refuses_a_manifest_pointing_at_another_file_of_the_same_shape(
    planted: Path,
) -> None:
    src_dir, tgt_dir = build(planted)
    lookalike = planted / "lookalike.npy"
    np.save(lookalike, -np.load(paths(planted)["src_emb"]))

    def point_elsewhere(data: dict) -> None:
        data["sources"][0]["path"] = str(lookalike)

    edit_json(src_dir / "manifest.json", point_elsewhere)
    result = invoke(*mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)))
    assert "lookalike.npy: SHA-256 differs" in one_line_error(result)


def test_sources_are_hashed_only_when_their_time_changed(planted: Path, monkeypatch) -> None:
    import os

    import xretrieve.core.integrity as integrity

    src_dir, tgt_dir = build(planted)
    hashed: list[str] = []
    real = integrity.file_sha256

    def counted(path):  # noqa: ANN001, ANN202
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(integrity, "file_sha256", counted)
    args = mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir))
    assert invoke(*args).exit_code == 0
    assert hashed == []  # size and time as recorded: not read
    src_emb = Path(paths(planted)["src_emb"])
    os.utime(src_emb, ns=(1, 1))  # touched (copied back, say): same content
    assert invoke(*args).exit_code == 0
    assert hashed == ["de-en.test.de.npy"]
    assert json.loads((src_dir / "manifest.json").read_text())["sources"][0]["mtime_ns"] == 1
    assert invoke(*args).exit_code == 0
    assert hashed == ["de-en.test.de.npy"]  # the refreshed record spares the hash


def test_a_manifest_without_modification_times_still_mines(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)

    def older(data: dict) -> None:
        for source in data["sources"]:
            del source["mtime_ns"]
        del data["lists"]

    edit_json(src_dir / "manifest.json", older)
    result = invoke(*mine_args(planted, "--src-index", str(src_dir), "--tgt-index", str(tgt_dir)))
    assert result.exit_code == 0, result.output
    refreshed = json.loads((src_dir / "manifest.json").read_text())
    assert refreshed["sources"][0]["mtime_ns"] > 0
    assert json.loads(result.stdout)["nprobe"] is None  # Flat: no lists, read from the shard


def test_mine_reports_the_nprobe_used_per_index(planted: Path) -> None:
    p = paths(planted)
    for name, emb, lists in (("de", p["src_emb"], "8"), ("en", p["tgt_emb"], "4")):
        result = invoke(
            "index", "build", emb, "--out", str(planted / name), "--no-progress",
            "--factory", f"IVF{lists},Flat",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    indexes = ["--src-index", str(planted / "de"), "--tgt-index", str(planted / "en")]
    result = invoke(*mine_args(planted, *indexes))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["nprobe"] == {"src_index": 8, "tgt_index": 4}
    result = invoke(*mine_args(planted, *indexes, "--nprobe", "3"))
    assert json.loads(result.stdout)["nprobe"] == 3
    table = invoke(*[a for a in mine_args(planted, *indexes) if a != "--json"])
    assert table.exit_code == 0, table.output
    assert "src index 8, tgt index 4" in table.stdout and "auto" not in table.stdout


def test_index_verify_says_what_it_verified(planted: Path) -> None:
    src_dir, _ = build(planted)
    result = invoke("index", "verify", str(src_dir))
    assert result.exit_code == 0, result.output
    assert "verified: 3 shard file(s), 71 rows" in result.stdout
    assert "1 source file(s)" in result.stdout and "SHA-256" in result.stdout
    data = json.loads(invoke("index", "verify", str(src_dir), "--json").stdout)
    assert data["verified"]["shards"] == 3 and data["verified"]["rows"] == 71


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        ("IVF99,PQ8", "IndexFlatIP, but manifest.json's factory 'IVF99,PQ8' builds IndexIVFPQ"),
        ("IVF4,Flat", "builds IndexIVFFlat"),
        ("Flat,nonsense", "records a factory FAISS cannot build"),
    ],
)
def test_index_verify_compares_the_factory_with_the_shard_files(
    planted: Path, factory: str, fragment: str
) -> None:
    src_dir, _ = build(planted)
    edit_json(src_dir / "manifest.json", lambda data: data.update(factory=factory))
    assert fragment in one_line_error(invoke("index", "verify", str(src_dir)))


def test_index_verify_compares_dimension_metric_and_rows(planted: Path, tmp_path: Path) -> None:
    import faiss

    src_dir, _ = build(planted)
    shard = src_dir / "shard-00001.faiss"
    l2 = faiss.IndexFlatL2(32)
    l2.add(np.zeros((25, 32), dtype=np.float32))
    faiss.write_index(l2, str(shard))
    from xretrieve.core.integrity import file_sha256

    def rehash(data: dict) -> None:
        data["shards"][1].update(bytes=shard.stat().st_size, sha256=file_sha256(shard))

    edit_json(src_dir / "manifest.json", rehash)
    line = one_line_error(invoke("index", "verify", str(src_dir)))
    assert "shard-00001.faiss: is IndexFlatL2 (dimension 32, L2); manifest.json says inner" in line


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            {"format_version": "1"},
            "'format_version' is '1', of the wrong type: expected an integer",
        ),
        ({"count": "71"}, "'count' is '71', of the wrong type: expected an integer"),
        ({"count": 71.0}, "'count' is 71.0, of the wrong type"),
        ({"normalized": "yes"}, "'normalized' is 'yes', of the wrong type: expected true or false"),
        ({"format_version": 2}, "manifest format 2, expected 1"),
        ({"shards": "none"}, "'shards' is not a non-empty list"),
    ],
)
def test_hand_edited_manifest_values_of_the_wrong_type_are_named(
    planted: Path, edit: dict, fragment: str
) -> None:
    src_dir, _ = build(planted)
    edit_json(src_dir / "manifest.json", lambda data: data.update(edit))
    line = one_line_error(invoke("index", "verify", str(src_dir)))
    assert fragment in line and "manifest.json" in line


def test_a_shard_file_outside_the_index_directory_is_refused(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)

    def escape(data: dict) -> None:
        data["shards"][0]["rows"] = "25"

    edit_json(src_dir / "manifest.json", escape)
    assert "shard 0: 'rows' is '25'" in one_line_error(invoke("index", "verify", str(src_dir)))

    def outside(data: dict) -> None:
        data["shards"][0]["rows"] = 25
        data["shards"][0]["file"] = "../en/shard-00000.faiss"

    edit_json(src_dir / "manifest.json", outside)
    line = one_line_error(invoke("index", "verify", str(src_dir)))
    assert "shard file '../en/shard-00000.faiss' is not a shard name" in line


def index_mine_args(planted: Path, src_dir: Path, tgt_dir: Path, *extra: str) -> list[str]:
    return mine_args(
        planted, "--k", "4", "--src-index", str(src_dir), "--tgt-index", str(tgt_dir), *extra
    )


def test_streamed_mining_writes_the_same_pairs_and_resumes(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    want = invoke(*index_mine_args(planted, src_dir, tgt_dir, "--stream", "off"))
    work, out = planted / "work", planted / "pairs.tsv"
    got = invoke(
        *index_mine_args(planted, src_dir, tgt_dir, "--work-dir", str(work), "--out", str(out))
    )
    assert want.exit_code == 0 and got.exit_code == 0, got.output
    summary = json.loads(got.stdout)
    assert summary.pop("out") == str(out) and summary == json.loads(want.stdout)
    assert json.loads((work / "pairs.json").read_text())["complete"]
    # A rerun reads the finished pairs (same directory, same settings).
    again = invoke(
        *index_mine_args(planted, src_dir, tgt_dir, "--work-dir", str(work), "--stream", "on")
    )
    assert again.exit_code == 0 and json.loads(again.stdout) == json.loads(want.stdout)


@pytest.mark.parametrize(("error", "code"), [("Terminated", 143), ("KeyboardInterrupt", 130)])
def test_a_signal_during_streamed_mining_leaves_finished_files_only(
    planted: Path, monkeypatch, error: str, code: int
) -> None:
    import xretrieve.mining.streaming as streaming
    from xretrieve.core.interrupts import Terminated

    src_dir, tgt_dir = build(planted)
    signal = {"Terminated": Terminated, "KeyboardInterrupt": KeyboardInterrupt}[error]
    write_means = streaming.write_means

    def means_then_signal(directory, direction, blocks, rows):
        write_means(directory, direction, blocks, rows)
        raise signal

    monkeypatch.setattr(streaming, "write_means", means_then_signal)
    work = planted / "work"
    args = index_mine_args(planted, src_dir, tgt_dir, "--work-dir", str(work))
    result = invoke(*args)
    assert result.exit_code == code, result.output
    names = sorted(p.name for p in work.iterdir())
    assert not [n for n in names if n.endswith(".tmp")] and "pairs.json" not in names
    assert "src-means.npy" in names and "fwd-block-000000.npy" in names
    monkeypatch.setattr(streaming, "write_means", write_means)
    want = invoke(*index_mine_args(planted, src_dir, tgt_dir, "--stream", "off"))
    again = invoke(*args)
    assert again.exit_code == 0 and json.loads(again.stdout) == json.loads(want.stdout)


def test_bad_streaming_options_exit_2_with_one_line(planted: Path) -> None:
    src_dir, tgt_dir = build(planted)
    foreign = planted / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep\n")
    line = one_line_error(
        invoke(*index_mine_args(planted, src_dir, tgt_dir, "--work-dir", str(foreign)))
    )
    assert "--work-dir is a non-empty directory that is not an earlier mine" in line
    assert (foreign / "todo.txt").read_text() == "keep\n"
    line = one_line_error(
        invoke(*index_mine_args(planted, src_dir, tgt_dir, "--work-dir", str(src_dir / "w")))
    )
    assert "--work-dir lies inside the input directory" in line
    args = index_mine_args(
        planted, src_dir, tgt_dir, "--work-dir", str(planted / "w"), "--stream", "off"
    )
    assert "--work-dir is where streamed mining works" in one_line_error(invoke(*args))
    line = one_line_error(invoke(*mine_args(planted, "--work-dir", str(planted / "w"))))
    assert "give both --src-index and --tgt-index" in line
    assert (
        invoke(*index_mine_args(planted, src_dir, tgt_dir, "--stream", "sometimes")).exit_code == 2
    )
    assert not (planted / "w").exists()


def test_build_prints_the_training_estimate_and_refuses_a_bad_device(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    args = ["index", "build", str(tmp_path / "rows.npy"), "--no-progress", "--device"]
    result = invoke(*args, "cpu", "--out", str(tmp_path / "i"), "--factory", "IVF16,Flat")
    assert result.exit_code == 0, result.output
    assert "training IVF16,Flat on 2,000 rows (CPU): estimated " in result.stderr
    assert "coarse k-means" in result.stderr and "adding 2,000 rows: estimated" in result.stderr
    line = one_line_error(invoke(*args, "gpu", "--out", str(tmp_path / "j")))
    assert line == "error: unknown device 'gpu'; --device must be one of auto, cuda, cpu"
    assert not (tmp_path / "j").exists()
