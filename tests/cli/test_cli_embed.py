"""``xretrieve embed`` through typer's CliRunner: output file, summary, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xretrieve.cli.app import app


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path_factory.getbasetemp() / "cli-embed-cache"))


def _invoke(*args: str):
    return CliRunner().invoke(app, ["embed", *args])


def test_embed_writes_rows_in_line_order_and_a_json_summary(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    lines = ["the cat", "", "Der Hund läuft " + "sehr " * 100, "le chat", "the cat"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    result = _invoke(
        str(tiny_xlmr_checkpoint),
        str(source),
        "--out",
        str(out),
        "--json",
        "--no-progress",
        "--batch-tokens",
        "64",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["provider"] == "CPUExecutionProvider"
    assert summary["sentences"] == 5 and summary["dim"] == 32 and summary["truncated"] == 1
    assert "provider: CPUExecutionProvider" in result.stderr
    assert "1 of 5 lines were longer than 128 tokens" in result.stderr
    embeddings = np.load(out)
    assert embeddings.shape == (5, 32)
    np.testing.assert_allclose(embeddings[0], embeddings[4], atol=1e-6)
    assert not np.allclose(embeddings[0], embeddings[3], atol=1e-3)


def test_torch_backend_with_all_layers(tiny_bert_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo three\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    result = _invoke(
        str(tiny_bert_checkpoint),
        str(source),
        "-o",
        str(out),
        "--backend",
        "torch",
        "--layers",
        "1,-1",
        "--all-layers",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "provider: torch-cpu-fp32-sdpa" in result.stderr
    assert np.load(out).shape == (2, 2, 32)


def test_invalid_utf8_is_reported_with_its_line(tiny_xlmr_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"ok\nalso ok\n\xff\xfe broken\n")
    out = tmp_path / "emb.npy"
    result = _invoke(str(tiny_xlmr_checkpoint), str(source), "--out", str(out), "--no-progress")
    assert result.exit_code == 2
    assert "in.txt:3: invalid UTF-8" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "unknown device"),
        (["--layers", "a,b"], "--layers takes comma-separated integers"),
    ],
)
def test_bad_options_exit_2(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("x\n", encoding="utf-8")
    result = _invoke(
        str(tiny_xlmr_checkpoint), str(source), "--out", str(tmp_path / "e.npy"), *args
    )
    assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize("wrong", ["input", "device"])
def test_an_early_error_is_one_line_with_progress_bars_on(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, wrong: str
) -> None:
    source = tmp_path / "in.txt"
    if wrong == "input":
        extra, message = [], f"error: {source}: cannot read: No such file or directory"
    else:
        source.write_text("x\n", encoding="utf-8")
        extra, message = ["--device", "tpu"], "error: unknown device"
    result = _invoke(
        str(tiny_xlmr_checkpoint), str(source), "--out", str(tmp_path / "e.npy"), *extra
    )
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message)


def test_missing_model_exits_2(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("x\n", encoding="utf-8")
    result = _invoke(str(tmp_path / "nope"), str(source), "--out", str(tmp_path / "e.npy"))
    assert result.exit_code == 2 and "no such model directory" in result.stderr


def test_output_equal_to_the_input_is_refused(tiny_xlmr_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("keep me\n", encoding="utf-8")
    for out in (source, tmp_path / "." / "in.txt"):
        result = _invoke(str(tiny_xlmr_checkpoint), str(source), "--out", str(out), "--no-progress")
        assert result.exit_code == 2, result.output
        assert "--out is an input" in result.stderr  # the shared output guard
    assert source.read_text(encoding="utf-8") == "keep me\n"


def _temp_files(directory: Path) -> list[Path]:
    return [path for path in directory.iterdir() if path.name.endswith(".tmp")]


def test_too_little_free_space_is_refused_before_writing(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\n", encoding="utf-8")
    out = tmp_path / "out" / "emb.npy"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    result = _invoke(str(tiny_xlmr_checkpoint), str(source), "--out", str(out), "--no-progress")
    assert result.exit_code == 2, result.output
    assert "not enough free space" in result.stderr and "emb.npy" in result.stderr
    assert not out.exists() and _temp_files(out.parent) == []


def test_disk_full_while_reserving_the_output_exits_2_and_leaves_nothing(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    monkeypatch.setattr(os, "posix_fallocate", full)
    result = _invoke(str(tiny_xlmr_checkpoint), str(source), "--out", str(out), "--no-progress")
    assert result.exit_code == 2, result.output
    assert "no space left on the device" in result.stderr
    assert not out.exists() and _temp_files(tmp_path) == []


@pytest.fixture(scope="module")
def tiny_export(tiny_xlmr_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from exporters import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("sigterm") / "export"
    export_checkpoint(tiny_xlmr_checkpoint, out, ExportConfig(dtype="fp32"))
    return out


def test_sigterm_during_embed_exits_143_and_leaves_no_temp_file(
    tiny_export: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "big.txt"
    line = "Der Hund läuft in den Park und spielt mit dem Ball, the cat sat on the mat\n"
    source.write_text(line * 200_000, encoding="utf-8")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from xretrieve.cli.app import main; main()",
            "embed",
            str(tiny_export),
            str(source),
            "--out",
            str(out_dir / "emb.npy"),
            "--no-progress",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.monotonic() + 120
        # The temporary output appears once the lines are counted and embedding starts.
        while not _temp_files(out_dir) and process.poll() is None:
            assert time.monotonic() < deadline, "embed never started writing"
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr.decode()
    assert "terminated" in stderr.decode()
    assert list(out_dir.iterdir()) == []
