"""The held-out data the default model's threshold was calibrated on: rebuilt identically from
the hand-written lists, disjoint from the bundled sample the quick start is scored on."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from exporters.model_settings import DEFAULT_MINING_THRESHOLD
from xretrieve.formats import read_bucc_split
from xretrieve.mining.bitext import sample_data_dir

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = ROOT / "benchmarks" / "calibration"


def _script():
    spec = importlib.util.spec_from_file_location(
        "calibrate_threshold", ROOT / "benchmarks" / "calibrate_threshold.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_is_deterministic_and_matches_the_shipped_files(tmp_path: Path) -> None:
    for name in ("pairs.tsv", "de_only.txt", "en_only.txt"):
        shutil.copy(CALIBRATION / name, tmp_path / name)
    _script().build(tmp_path)
    for suffix in ("de", "en", "gold"):
        name = f"bucc2018/de-en.heldout.{suffix}"
        assert (tmp_path / name).read_bytes() == (CALIBRATION / name).read_bytes()


def test_heldout_split_is_disjoint_from_the_bundled_sample() -> None:
    heldout = read_bucc_split(CALIBRATION, "de", "heldout")
    sample = read_bucc_split(sample_data_dir(), "de", "sample")
    assert len(heldout.gold) == 150 and len(heldout.src) == len(heldout.tgt) == 225
    assert not set(heldout.src.texts) & set(sample.src.texts)
    assert not set(heldout.tgt.texts) & set(sample.tgt.texts)
    assert DEFAULT_MINING_THRESHOLD["margin"] == "ratio" and DEFAULT_MINING_THRESHOLD["k"] == 4
