"""An interrupted index build resumes: no second training, finished shards kept, the same index
as an uninterrupted build; other settings or changed sources start afresh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import unit_rows

import xretrieve.index.build as build
from xretrieve.index import BuildConfig, build_index, open_index
from xretrieve.index.partial import work_directory

TRAIN, WRITE_SHARD = build._train_to_file, build.write_shard
CONFIG = BuildConfig(factory="IVF8,PQ4x4", train_size=600, seed=7, shard_rows=150)


@pytest.fixture()
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.npy"
    np.save(path, unit_rows(np.random.default_rng(0).standard_normal((700, 16))))
    return path


class Interrupted(Exception):
    """Stands for Ctrl-C, SIGTERM or a crash (pytest itself stops on a KeyboardInterrupt)."""


class Calls:
    """Counts training and shard writes; raises Interrupted at shard ``stop_at``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_at: int | None = None) -> None:
        self.trained, self.shards = 0, []
        train, write = TRAIN, WRITE_SHARD

        def counted_train(*args, **kwargs):
            self.trained += 1
            return train(*args, **kwargs)

        def counted_write(trained, rows, number, *args, **kwargs):
            if number == stop_at:
                raise Interrupted
            self.shards.append(number)
            return write(trained, rows, number, *args, **kwargs)

        monkeypatch.setattr(build, "_train_to_file", counted_train)
        monkeypatch.setattr(build, "write_shard", counted_write)


def shard_hashes(directory: Path) -> list[str]:
    return [shard.sha256 for shard in open_index(directory).manifest.shards]


def test_interrupted_build_resumes_without_training_again(
    tmp_path: Path, rows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = build_index([rows], tmp_path / "whole", CONFIG)
    out = tmp_path / "index"
    first = Calls(monkeypatch, stop_at=3)
    with pytest.raises(Interrupted):
        build_index([rows], out, CONFIG)
    assert (first.trained, first.shards) == (1, [0, 1, 2])
    assert not out.exists() and work_directory(out).is_dir()

    again = Calls(monkeypatch)
    got = build_index([rows], out, CONFIG)
    assert (again.trained, again.shards) == (0, [3, 4])
    assert got == want.__class__(**{**want.__dict__, "sources": got.sources})
    assert shard_hashes(out) == shard_hashes(tmp_path / "whole")
    assert not work_directory(out).exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [
        f"shard-0000{i}.faiss" for i in range(5)
    ]


def test_a_damaged_finished_shard_is_rebuilt(
    tmp_path: Path, rows: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "index"
    Calls(monkeypatch, stop_at=2)
    with pytest.raises(Interrupted):
        build_index([rows], out, CONFIG)
    shard = work_directory(out) / "shard-00001.faiss"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    shard.write_bytes(bytes(data))
    again = Calls(monkeypatch)
    build_index([rows], out, CONFIG)
    assert (again.trained, again.shards) == (0, [1, 2, 3, 4])


@pytest.mark.parametrize("change", ["seed", "sources", "no-resume"])
def test_other_settings_or_sources_start_afresh(
    tmp_path: Path, rows: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    out = tmp_path / "index"
    Calls(monkeypatch, stop_at=2)
    with pytest.raises(Interrupted):
        build_index([rows], out, CONFIG)
    config = CONFIG
    if change == "seed":
        config = BuildConfig(**{**CONFIG.__dict__, "seed": 8})
    elif change == "sources":
        np.save(rows, -np.load(rows))
    else:
        config = BuildConfig(**{**CONFIG.__dict__, "resume": False})
    again = Calls(monkeypatch)
    build_index([rows], out, config)
    assert (again.trained, again.shards) == (1, [0, 1, 2, 3, 4])
    assert not work_directory(out).exists()


def test_a_failed_check_leaves_no_work_directory(tmp_path: Path, rows: Path) -> None:
    with pytest.raises(Exception, match="too few training points"):
        build_index([rows], tmp_path / "index", BuildConfig(factory="IVF1024,Flat"))
    assert not work_directory(tmp_path / "index").exists()
