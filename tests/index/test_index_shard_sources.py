"""``index build DIR`` on an ``embed --ray`` directory reads only shards that match the
directory's manifest: a replaced or truncated shard, reordered or dropped entries, an edited
line count and a file entry pointing outside the directory are refused (exit 2, one line,
nothing written)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core.integrity import file_sha256
from xretrieve.formats.embedding_shards import (
    ShardEntry,
    ShardSettings,
    ShardsManifest,
    shard_name,
    write_shards_manifest,
)

runner = CliRunner()
LINES, SHARD_LINES, DIM = 50, 20, 8


def write_shards(directory: Path, rows: np.ndarray) -> None:
    """``rows`` as embed --ray writes them: shards of ``SHARD_LINES`` and a manifest."""
    directory.mkdir()
    entries = []
    for number, first in enumerate(range(0, len(rows), SHARD_LINES)):
        path = directory / shard_name(number)
        np.save(path, rows[first : first + SHARD_LINES])
        lines = min(SHARD_LINES, len(rows) - first)
        entries.append(
            ShardEntry(number, first, lines, path.name, path.stat().st_size, file_sha256(path))
        )
    settings = ShardSettings(
        model="m", model_hash="h", backend="onnx", compute_dtype="fp32", layers=None,
        layer_outputs=False, out_dtype="float32", input_path="in.txt", input_bytes=1,
        input_sha256="x", input_lines=len(rows), shard_lines=SHARD_LINES,
    )  # fmt: skip
    write_shards_manifest(
        directory, ShardsManifest(settings, DIM, (12,), len(entries), tuple(entries))
    )


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    rows = np.random.default_rng(0).standard_normal((LINES, DIM)).astype(np.float32)
    np.save(tmp_path / "de.npy", rows)
    write_shards(tmp_path / "emb", rows)
    return tmp_path / "emb"


def build(directory: Path, out: Path):
    return runner.invoke(
        app, ["index", "build", str(directory), "--out", str(out), "--no-progress"]
    )


def edit_manifest(directory: Path, edit: Callable[[dict], None]) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def rerecord(directory: Path, number: int) -> Callable[[dict], None]:
    """An edit giving shard ``number`` its file's current size and hash."""
    path = directory / shard_name(number)

    def edit(data: dict) -> None:
        data["shards"][number].update(bytes=path.stat().st_size, sha256=file_sha256(path))

    return edit


def test_a_shards_directory_that_matches_its_manifest_builds(shards: Path, tmp_path: Path) -> None:
    result = build(shards, tmp_path / "idx")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["sources"]] == [20, 20, 10]
    assert [s["sha256"] for s in manifest["sources"]] == [
        file_sha256(shards / shard_name(i)) for i in range(3)
    ]


def replaced(shards: Path) -> None:
    path = shards / shard_name(1)
    np.save(path, -np.load(path))  # same size, other content


def truncated(shards: Path) -> None:
    path = shards / shard_name(1)
    np.save(path, np.load(path)[:15])


def truncated_and_rerecorded(shards: Path) -> None:
    truncated(shards)
    edit_manifest(shards, rerecord(shards, 1))


def reordered(shards: Path) -> None:
    edit_manifest(shards, lambda data: data["shards"].reverse())


def dropped(shards: Path) -> None:
    def drop(data: dict) -> None:
        del data["shards"][1]
        data["n_shards"] = 2

    edit_manifest(shards, drop)


def lines_edited(shards: Path) -> None:
    edit_manifest(shards, lambda data: data["shards"][2].update(lines=12))


def outside(shards: Path) -> None:
    def point_outside(data: dict) -> None:
        target = shards.parent / "de.npy"
        data["shards"][0].update(
            file="../de.npy", bytes=target.stat().st_size, sha256=file_sha256(target)
        )

    edit_manifest(shards, point_outside)


def lines_a_string(shards: Path) -> None:
    edit_manifest(shards, lambda data: data["shards"][0].update(lines="20"))


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (replaced, "shard-00001.npy: SHA-256 differs from manifest.json's record"),
        (truncated, "shard-00001.npy: has 608 bytes, manifest.json says 768"),
        (truncated_and_rerecorded, "shard-00001.npy: has shape (15, 8), manifest.json says 20"),
        (reordered, "shard entry 0 is numbered 2"),
        (dropped, "shard entry 1 is numbered 2"),
        (lines_edited, "shard 2 records lines 40+12, expected 40+10"),
        (outside, "shard 0's file is '../de.npy', expected 'shard-00000.npy'"),
        (lines_a_string, "shard entry 0: 'lines' is '20', not a count"),
    ],
)
def test_shards_that_differ_from_the_manifest_are_refused(
    shards: Path, tmp_path: Path, damage: Callable[[Path], None], fragment: str
) -> None:
    damage(shards)
    result = build(shards, tmp_path / "idx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["de.npy", "emb"]
