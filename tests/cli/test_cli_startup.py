"""What a command does before it works: ``xretrieve --help`` (every command's help) imports none
of the heavy packages, and ``embed`` checks its input file and its output (never inside the
model folder) before it loads, exports or even imports a model runtime. Each runs in a fresh
interpreter, whose ``sys.modules`` tells what was imported (start-up times are measured by
``benchmarks/bench_startup.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "onnxruntime", "faiss", "ray", "tokenizers")

# Runs the CLI on sys.argv[1:] in-process, then prints the exit code and the heavy packages
# imported, as JSON on the last line of stdout.
_RUN = """
import json, sys
from xretrieve.cli.app import app
code = 0
try:
    app(sys.argv[1:], prog_name="xretrieve")
except SystemExit as exit:
    code = exit.code or 0
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy}))
""".replace("HEAVY", repr(HEAVY))


def _run(args: list[str], cache: Path) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XRETRIEVE_CACHE": str(cache)}
    run = subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["mine"], ["embed"], ["export"], ["index", "build"], ["evaluate"], ["train"], ["bench"]],
)
def test_help_imports_no_heavy_package(command: list[str], tmp_path: Path) -> None:
    outcome, _ = _run([*command, "--help"], tmp_path / "cache")
    assert outcome == {"code": 0, "heavy": []}


def test_importing_the_cli_imports_no_heavy_package() -> None:
    code = "import json, sys, xretrieve.cli.app; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert not set(HEAVY) & {name.split(".")[0] for name in json.loads(run.stdout)}


def test_embed_checks_its_input_before_loading_the_model(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    missing = tmp_path / "missing.txt"
    outcome, stderr = _run(
        ["embed", str(tiny_xlmr_checkpoint), str(missing), "--out", str(tmp_path / "x.npy"),
         "--no-progress"],
        cache,
    )  # fmt: skip
    assert outcome == {"code": 2, "heavy": []}, stderr
    assert stderr.strip() == f"error: {missing}: cannot read: No such file or directory"
    assert not cache.exists(), "the checkpoint was exported before the input was checked"
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("inside", ["emb.npy", "sub/emb.npy"])
def test_embed_out_inside_the_model_folder_is_refused(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, inside: str
) -> None:
    text = tmp_path / "in.txt"
    text.write_text("the cat\nle chat\n", encoding="utf-8")
    before = sorted(p.relative_to(tiny_xlmr_checkpoint) for p in tiny_xlmr_checkpoint.rglob("*"))
    outcome, stderr = _run(
        ["embed", str(tiny_xlmr_checkpoint), str(text), "--out",
         str(tiny_xlmr_checkpoint / inside), "--no-progress"],
        tmp_path / "cache",
    )  # fmt: skip
    assert outcome["code"] == 2, stderr
    assert "lies inside the input directory" in stderr and len(stderr.strip().splitlines()) == 1
    assert "onnxruntime" not in outcome["heavy"]
    after = sorted(p.relative_to(tiny_xlmr_checkpoint) for p in tiny_xlmr_checkpoint.rglob("*"))
    assert after == before
