"""xretrieve.core.integrity: digests recorded at write, verified by size/mtime, re-hashed on change."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from xretrieve.core.integrity import (
    DIRECTORY_RECORD,
    file_sha256,
    verify_record,
    write_directory_record,
)


def test_record_verifies_and_names_what_changed(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"alpha")
    (tmp_path / "b.txt").write_text("beta")
    record = write_directory_record(tmp_path)
    assert record == tmp_path / DIRECTORY_RECORD
    entries = json.loads(record.read_text())["files"]
    assert sorted(entries) == ["a.bin", "b.txt"]
    assert entries["a.bin"]["sha256"] == hashlib.sha256(b"alpha").hexdigest()
    assert file_sha256(tmp_path / "a.bin") == hashlib.sha256(b"alpha").hexdigest()
    assert verify_record(record) is None

    (tmp_path / "a.bin").write_bytes(b"alphaX")
    assert "a.bin has 6 bytes, 5 were written" in verify_record(record)
    (tmp_path / "a.bin").write_bytes(b"alphb")  # same size, new mtime, other content
    assert "a.bin changed" in verify_record(record)
    (tmp_path / "a.bin").write_bytes(b"alpha")  # restored: the content is what counts
    assert verify_record(record) is None
    os.unlink(tmp_path / "b.txt")
    assert verify_record(record) == "b.txt is missing"


def test_missing_or_unreadable_record(tmp_path: Path) -> None:
    assert verify_record(tmp_path / DIRECTORY_RECORD) == f"no integrity record {DIRECTORY_RECORD}"
    (tmp_path / DIRECTORY_RECORD).write_text("{")
    assert "unreadable" in verify_record(tmp_path / DIRECTORY_RECORD)
