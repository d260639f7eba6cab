"""Start-up of the ``xretrieve`` command: wall time from process start to exit for commands that
stop early (help, a missing input file) or do almost nothing (embed two lines, mine 200 sentences
a side from their embedding files), against the peer
``python -c pass``, and which heavy packages each one imports (from ``python -X importtime``).

Prints one JSON document: per command the median and fastest wall time over ``--repeat`` runs
(the commands run in turn, A B C A B C, so that load from other jobs hits all alike), its exit
code, and the heavy packages it imported with their cumulative import time. The model is a tiny
random XLM-R checkpoint (``tests/tiny_models.py``) exported once to fp32 in a temporary
directory, or ``--model`` (an export or checkpoint directory).

    python benchmarks/bench_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "onnxruntime", "faiss", "ray", "tokenizers", "numpy")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| +(\S+)$")


def _environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ, XRETRIEVE_CACHE=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _export_tiny_model(work: Path, env: dict[str, str]) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(work / "checkpoint")
    export = work / "export"
    subprocess.run(
        [sys.executable, "-m", "xretrieve.cli.app", "export", str(checkpoint), "--out",
         str(export), "--dtype", "fp32", "--no-progress"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return export


def _mining_inputs(work: Path) -> list[str]:
    """200 sentences a side and their (random, unit-length) embeddings: mining them is instant."""
    import numpy as np

    rows = np.random.default_rng(0).standard_normal((2, 200, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=2, keepdims=True)
    args = []
    for side, emb in zip(("src", "tgt"), rows, strict=True):
        (work / f"{side}.txt").write_text("".join(f"s{i}\n" for i in range(200)))
        np.save(work / f"{side}.npy", emb)
        args += [
            f"--{side}-file",
            str(work / f"{side}.txt"),
            f"--{side}-emb",
            str(work / f"{side}.npy"),
        ]
    return args


def _commands(model: Path, work: Path) -> dict[str, list[str]]:
    (work / "two.txt").write_text("hello world\nle chat\n", encoding="utf-8")
    cli = [sys.executable, "-m", "xretrieve.cli.app"]
    embed = [*cli, "embed", str(model)]
    mine = [*cli, "mine", *_mining_inputs(work), "--out", str(work / "pairs.tsv"), "--no-progress"]
    return {
        "python -c pass (peer)": [sys.executable, "-c", "pass"],
        "import xretrieve.cli.app": [sys.executable, "-c", "import xretrieve.cli.app"],
        "xretrieve --help": [*cli, "--help"],
        "xretrieve mine --help": [*cli, "mine", "--help"],
        "xretrieve embed MODEL missing.txt": [
            *embed, str(work / "missing.txt"), "--out", str(work / "x.npy"), "--no-progress"
        ],
        "xretrieve embed MODEL two-lines.txt": [
            *embed, str(work / "two.txt"), "--out", str(work / "y.npy"), "--no-progress"
        ],
        "xretrieve mine (200 x 200 .npy embeddings)": mine,
    }  # fmt: skip


def _heavy_imports(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Heavy packages the command imports, each with its cumulative import time (s)."""
    run = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]], env=env, capture_output=True, text=True
    )
    found: dict[str, float] = {}
    for line in run.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and match.group(2) in HEAVY:
            found[match.group(2)] = found.get(match.group(2), 0.0) + int(match.group(1)) / 1e6
    return {name: round(seconds, 3) for name, seconds in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", type=Path, help="export or checkpoint directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        env = _environment(work / "cache")
        model = args.model or _export_tiny_model(work, env)
        commands = _commands(model, work)
        load_before = os.getloadavg()[0]
        times: dict[str, list[float]] = {name: [] for name in commands}
        codes: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, command in commands.items():
                started = time.perf_counter()
                run = subprocess.run(command, env=env, capture_output=True)
                times[name].append(time.perf_counter() - started)
                codes[name] = run.returncode
        results = {
            name: {
                "median_s": round(statistics.median(times[name]), 3),
                "min_s": round(min(times[name]), 3),
                "exit_code": codes[name],
                "heavy_imports_s": _heavy_imports(command, env),
            }
            for name, command in commands.items()
        }
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "repeat": args.repeat,
                    "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    "commands": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
