"""A real ``xretrieve index build`` process and a real signal during a long FAISS training (LSQ
codebooks, which FAISS's own interrupt checks leave uninterrupted for tens of seconds): SIGTERM exits 143 and Ctrl-C 130 within seconds, not when the
training ends; the training process is stopped too, the work directory is kept for a resumed
run with nothing half-written in it; a second build of the same ``--out`` meanwhile fails at
once (exit 2, one line) instead of resuming the live work directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core.outputs import lock_path
from xretrieve.index.partial import work_directory

ROOT = Path(__file__).resolve().parents[2]
# Seconds a signalled build may take to exit (the training it interrupts takes far longer).
PROMPT = 10.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_training_stops_the_build_within_seconds(
    tmp_path: Path, signum: int, code: int
) -> None:
    rows = np.random.default_rng(0).standard_normal((50_000, 32)).astype(np.float32)
    np.save(tmp_path / "de.npy", rows)
    out = tmp_path / "idx"
    command = [sys.executable, "-c", "from xretrieve.cli.app import main; main()", "index"]
    command += ["build", str(tmp_path / "de.npy"), "--out", str(out), "--no-progress"]
    command += ["--factory", "LSQ4x8", "--train-size", "50000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        settings = work_directory(out) / "build.json"
        while not (settings.is_file() and children(process.pid)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the build never started training"
            time.sleep(0.1)
        trainer = children(process.pid)
        time.sleep(2.0)  # the training process is under way
        assert process.poll() is None

        second = CliRunner().invoke(app, ["index", "build", str(tmp_path / "de.npy"),
                                          "--out", str(out), "--no-progress"])  # fmt: skip
        assert second.exit_code == 2, second.output
        assert second.stderr.count("\n") == 1
        assert "another index build of this --out is running" in second.stderr

        sent = time.monotonic()
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr.decode()
    assert took < PROMPT, f"exited {took:.1f} s after the signal"
    assert b"Traceback" not in stderr
    assert not any(alive(pid) for pid in trainer), "the training process outlived the build"
    assert not out.exists() and not lock_path(out).exists()
    assert sorted(p.name for p in work_directory(out).iterdir()) == ["build.json"]
