"""Regenerate ``cases/`` and the reference outputs in ``expected/`` (see README.md here).

    python tests/data/xtreme/make_cases.py --reference /path/to/xtreme-checkout

``--reference`` is a checkout of google-research/xtreme (its ``evaluate.py`` and ``third_party/``
are run, never copied here), with seqeval installed in this Python. Run from the repository root
with ``PYTHONPATH=.:tests``."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from xtreme_cases import (
    empty_submission,
    partial_submission,
    perfect_submission,
    write_random_cases,
)

HERE = Path(__file__).resolve().parent


def run_reference(reference: Path, predictions: Path, labels: Path, out: Path) -> None:
    """XTREME's evaluate.py on one submission; its report goes to ``out``. PYTHONHASHSEED is
    fixed because it sums all_task over a set (the last digits follow the set's order)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "--prediction_folder",
            str(predictions),
            "--label_folder",
            str(labels),
            "--output_file",
            str(out),
        ],
        cwd=reference,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # one "Unanswered question" line per missing answer
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", type=Path, required=True)
    args = parser.parse_args()
    cases = HERE / "cases"
    shutil.rmtree(cases, ignore_errors=True)
    write_random_cases(cases / "labels", cases / "random")
    expected = HERE / "expected"
    expected.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        derived = {
            "partial": partial_submission(cases / "random", Path(scratch) / "partial"),
            "empty": empty_submission(Path(scratch) / "empty"),
            "perfect": perfect_submission(cases / "labels", Path(scratch) / "perfect"),
        }
        runs = {
            "mock": (HERE / "mock" / "predictions", HERE / "mock" / "labels"),
            "random": (cases / "random", cases / "labels"),
            **{name: (path, cases / "labels") for name, path in derived.items()},
        }
        for name, (predictions, labels) in runs.items():
            run_reference(args.reference, predictions, labels, expected / f"{name}.json")
            print(f"wrote {expected / name}.json")


if __name__ == "__main__":
    main()
