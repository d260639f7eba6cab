"""``index build --out`` goes through the shared output guard and writes nothing before its
checks pass: a foreign directory, an input, a folder holding one, the current directory or an
ancestor of it, a file, a path under a file or in a read-only folder are refused with exit 2 and
one line; NaN input, a bad factory and an unreachable Ray cluster leave no ``.OUT.partial``; a
damaged resume state is discarded with a warning; a second build of the same ``--out`` fails at
once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xretrieve.index.build as build
from xretrieve.cli.app import app
from xretrieve.core.errors import XRetrieveError
from xretrieve.core.outputs import lock_path
from xretrieve.index.partial import work_directory

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["index", "build", "--no-progress", *args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with a file's bytes."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with ``de.npy`` (600 x 16) as the current directory."""
    rows = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    np.save(tmp_path / "de.npy", rows)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("source", "out", "fragment"),
    [
        ("de.npy", "u", "not an earlier index build output (no index manifest.json)"),
        ("u2/de.npy", "u2", "--out holds the input u2/de.npy"),
        ("de.npy", "de.npy", "--out is an input"),
        ("de.npy", "u/notes.txt", "--out must be a directory; this is a file"),
        ("de.npy", "u/notes.txt/x", "u/notes.txt is a file, not a directory"),
        ("u/sub/de.npy", "u/sub/deeper/..", "--out holds the input"),
        ("de.npy", ".", "--out holds the input de.npy"),
        ("u/sub/de.npy", "..", "--out holds the input"),
        ("u/sub/de.npy", "u/sub/idx", None),
    ],
)
def test_out_is_checked_before_any_work_and_nothing_is_touched(
    work: Path, source: str, out: str, fragment: str | None
) -> None:
    (work / "u" / "sub").mkdir(parents=True)
    (work / "u" / "notes.txt").write_text("keep\n")
    (work / "u2").mkdir()
    (work / "u2" / "de.npy").write_bytes((work / "de.npy").read_bytes())
    (work / "u" / "sub" / "de.npy").write_bytes((work / "de.npy").read_bytes())
    before = tree(work)
    result = invoke(source, "--out", out)
    if fragment is None:  # the control: a new directory next to the source is fine
        assert result.exit_code == 0, result.output
        return
    assert fragment in one_line_error(result)
    assert tree(work) == before


def test_out_as_an_ancestor_of_the_working_directory_is_refused(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (work / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(work / "a" / "b")
    before = tree(work)
    result = invoke(str(work / "de.npy"), "--out", str(work / "a"))
    assert "current directory or contains it" in one_line_error(result)
    assert tree(work) == before


def test_read_only_parent_is_refused(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root a chmod-ed folder stays writable: make os.access say what it says to a user.
    real = os.access
    locked = work / "locked"
    locked.mkdir()

    def access(path, mode, *args, **kwargs):  # noqa: ANN001, ANN202 - os.access's signature
        return False if Path(path).resolve() == locked and mode & os.W_OK else real(path, mode)

    monkeypatch.setattr(os, "access", access)
    result = invoke("de.npy", "--out", "locked/idx")
    assert "is not writable" in one_line_error(result)
    assert list(locked.iterdir()) == []


def test_an_earlier_index_is_replaced_but_not_one_holding_other_files(work: Path) -> None:
    assert invoke("de.npy", "--out", "idx", "--shard-rows", "250").exit_code == 0
    assert invoke("de.npy", "--out", "idx").exit_code == 0  # replaced: one shard now
    assert sorted(p.name for p in (work / "idx").iterdir()) == [
        "manifest.json", "shard-00000.faiss"
    ]  # fmt: skip
    (work / "idx" / "notes.txt").write_text("mine\n")
    before = tree(work)
    assert "it also holds notes.txt" in one_line_error(invoke("de.npy", "--out", "idx"))
    assert tree(work) == before
    (work / "idx" / "notes.txt").unlink()
    (work / "idx" / "manifest.json").write_text('{"format": "something else"}')
    assert "not an index manifest" in one_line_error(invoke("de.npy", "--out", "idx"))


def test_a_foreign_work_directory_is_never_cleared(work: Path) -> None:
    partial = work_directory(work / "idx")
    partial.mkdir()
    (partial / "notes.txt").write_text("keep\n")
    before = tree(work)
    line = one_line_error(invoke("de.npy", "--out", "idx", "--no-resume"))
    assert "--out's work directory" in line and "notes.txt" in line
    assert tree(work) == before
    (partial / "notes.txt").unlink()
    partial.rmdir()
    partial.write_text("a file\n")
    assert "must be a directory" in one_line_error(invoke("de.npy", "--out", "idx"))


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_input_is_refused_before_anything_is_written(work: Path, bad: str) -> None:
    rows = np.load(work / "de.npy")
    rows[599, 3] = np.nan if bad == "nan" else np.inf
    np.save(work / "bad.npy", rows)
    before = tree(work)
    line = one_line_error(invoke("bad.npy", "--out", "new/idx", "--factory", "IVF4,Flat"))
    assert "bad.npy: NaN or infinite value in row 599" in line
    assert tree(work) == before  # no .idx.partial/{build.json,trained.faiss}, lock file, new/


def test_unreachable_ray_cluster_is_refused_before_hashing_or_training(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xretrieve.core.ray_cluster as ray_cluster

    calls: list[str] = []

    def unreachable(address: str) -> bool:
        raise XRetrieveError(f"cannot reach a Ray cluster at {address!r}")

    def hashed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append("hash")
        raise AssertionError("hashed before reaching the cluster")

    monkeypatch.setattr(ray_cluster, "connect", unreachable)
    monkeypatch.setattr(build, "_hashed_sources", hashed)
    before = tree(work)
    result = invoke("de.npy", "--out", "idx", "--factory", "IVF4,Flat", "--ray", "auto")
    assert "cannot reach a Ray cluster at 'auto'" in one_line_error(result)
    assert calls == [] and tree(work) == before


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        ("LSH", "FAISS has this index for the L2 metric only"),
        ("Garbage", "not a FAISS index_factory string"),
        ("IVF4,PQ5", "The dimension of the vector (d) should be a multiple of the number"),
    ],
)
def test_a_factory_faiss_rejects_is_one_clear_line(work: Path, factory: str, fragment: str) -> None:
    before = tree(work)
    line = one_line_error(invoke("de.npy", "--out", "idx", "--factory", factory))
    assert f"FAISS cannot build index '{factory}' for dimension 16: {fragment}" in line
    assert "Error in" not in line and ".cpp" not in line
    assert tree(work) == before


def test_a_text_file_named_npy_is_called_so(work: Path) -> None:
    (work / "text.npy").write_text("hello\nworld\n")
    line = one_line_error(invoke("text.npy", "--out", "idx"))
    assert "text.npy: not a readable .npy file: it does not start with the .npy header" in line
    assert "pickled" not in line


def test_a_damaged_trained_index_is_discarded_with_a_warning(
    work: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    config = ["de.npy", "--out", "idx", "--factory", "IVF4,Flat", "--shard-rows", "200"]
    with monkeypatch.context() as patch:
        patch.setattr(build, "write_shard", interrupted)
        assert invoke(*config).exit_code == 130
    trained = work_directory(work / "idx") / "trained.faiss"
    assert trained.is_file() and not lock_path(work / "idx").exists()
    trained.write_bytes(trained.read_bytes()[:40])
    with caplog.at_level("WARNING"):
        result = invoke(*config)
    assert result.exit_code == 0, result.output
    assert "discarding the damaged trained index" in caplog.text
    assert not work_directory(work / "idx").exists()
    assert json.loads((work / "idx" / "manifest.json").read_text())["lists"] == 4


def test_a_second_build_of_the_same_out_fails_at_once(work: Path) -> None:
    from xretrieve.index.partial import build_lock

    with build_lock(work / "idx"):  # as a build running in another process holds it
        line = one_line_error(invoke("de.npy", "--out", "idx"))
    assert "another index build of this --out is running" in line
    assert not work_directory(work / "idx").exists()
    assert not lock_path(work / "idx").exists()
    assert invoke("de.npy", "--out", "idx").exit_code == 0
    assert sorted(p.name for p in work.iterdir()) == ["de.npy", "idx"]
