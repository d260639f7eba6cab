"""Corrupt, truncated or empty ``model.safetensors``: every command that loads weights (export,
embed on both backends, evaluate, train) stops with one line naming the file and exit code 2
(evaluate fails that checkpoint alone), never a safetensors traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporters import checkpoint as checks
from xretrieve.cli.app import app
from xretrieve.core.errors import InputError


def _damage(checkpoint: Path, target: Path, kind: str) -> Path:
    shutil.copytree(checkpoint, target)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    if kind == "empty":
        weights.write_bytes(b"")
    elif kind == "truncated":  # the header is whole, the tensor data cut short
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        weights.write_bytes(os.urandom(len(data)))
    elif kind == "short":  # cut inside the 8-byte length
        weights.write_bytes(data[:5])
    elif kind == "bad-header":  # a plausible length, but the header is not JSON
        length = int.from_bytes(data[:8], "little")
        weights.write_bytes(data[:8] + b"\xff" * length + data[8 + length :])
    else:
        raise ValueError(kind)
    return target


KINDS = ("empty", "truncated", "garbage", "short", "bad-header")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "xcache"))


def test_intact_weights_pass_the_check(tiny_xlmr_checkpoint: Path) -> None:
    checks.check_safetensors(tiny_xlmr_checkpoint / "model.safetensors")
    checks.check_weights(tiny_xlmr_checkpoint)


@pytest.mark.parametrize("kind", KINDS)
def test_check_names_the_damaged_file(tiny_xlmr_checkpoint: Path, tmp_path: Path, kind) -> None:
    checkpoint = _damage(tiny_xlmr_checkpoint, tmp_path / kind, kind)
    with pytest.raises(InputError) as info:
        checks.check_weights(checkpoint)
    assert info.value.path == checkpoint / "model.safetensors"


def test_one_extra_byte_or_one_missing_byte_is_found(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    data = (tiny_xlmr_checkpoint / "model.safetensors").read_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[:-1])
    with pytest.raises(InputError, match="beyond the"):
        checks.check_safetensors(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(InputError, match="file holds"):
        checks.check_safetensors(path)


def test_sharded_weights_check_every_shard(tiny_xlmr_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "sharded"
    shutil.copytree(tiny_xlmr_checkpoint, checkpoint)
    shard = checkpoint / "model-00001-of-00002.safetensors"
    (checkpoint / "model.safetensors").rename(shard)
    index = {"weight_map": {"a": shard.name, "b": "model-00002-of-00002.safetensors"}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="cannot read") as info:
        checks.check_weights(checkpoint)
    assert info.value.path == checkpoint / "model-00002-of-00002.safetensors"
    shutil.copy(shard, checkpoint / "model-00002-of-00002.safetensors")
    checks.check_weights(checkpoint)
    shard.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as info:
        checks.check_weights(checkpoint)
    assert info.value.path == shard


def _one_error_line(result, weights: Path) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(weights) in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("kind", ("empty", "truncated", "garbage"))
def test_export_exits_2(tiny_xlmr_checkpoint: Path, tmp_path: Path, kind: str) -> None:
    checkpoint = _damage(tiny_xlmr_checkpoint, tmp_path / "ck", kind)
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(tmp_path / "ex"), "--dtype", "fp32",
              "--no-progress"],
    )  # fmt: skip
    _one_error_line(result, checkpoint / "model.safetensors")
    assert not (tmp_path / "ex").exists()


@pytest.mark.parametrize("backend", ("ort", "torch"))
@pytest.mark.parametrize("kind", ("empty", "truncated"))
def test_embed_exits_2(tiny_xlmr_checkpoint: Path, tmp_path: Path, backend, kind) -> None:
    checkpoint = _damage(tiny_xlmr_checkpoint, tmp_path / "ck", kind)
    text = tmp_path / "in.txt"
    text.write_text("the cat\nle chat\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(
        app, ["embed", str(checkpoint), str(text), "--out", str(out), "--backend", backend,
              "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    _one_error_line(result, checkpoint / "model.safetensors")
    assert not out.exists()


def test_evaluate_fails_only_the_damaged_checkpoint(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    from evaluation_data import make_dataset

    from xretrieve.evaluation import ResultsLog

    data = make_dataset(tmp_path / "data", bucc_langs=(), tatoeba_langs=("deu",), n_tatoeba=10)
    damaged = _damage(tiny_xlmr_checkpoint, tmp_path / "damaged", "truncated")
    result = CliRunner().invoke(
        app, ["evaluate", str(damaged), str(tiny_xlmr_checkpoint), "--data-dir", str(data),
              "--tasks", "tatoeba", "--out", str(tmp_path / "out"), "--device", "cpu",
              "--resamples", "10", "--no-progress"],
    )  # fmt: skip
    # Exit 1: some languages failed (evaluate's documented code); the run itself went on.
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = ResultsLog(tmp_path / "out" / "results.jsonl").read()
    failed = [row for row in rows if row.error]
    scored = [row for row in rows if row.error is None]
    assert {row.checkpoint for row in failed} == {"damaged"}
    assert all(str(damaged / "model.safetensors") in row.error for row in failed)
    assert {row.checkpoint for row in scored} == {tiny_xlmr_checkpoint.name}
    assert str(damaged / "model.safetensors") in result.stderr


def _train_config(base: Path, tmp_path: Path, **top) -> Path:
    import trainer_data

    task = trainer_data.write_pair_task(tmp_path / "data")
    config = tmp_path / "run.toml"
    lines = [f'base = "{base}"', 'output_dir = "out"', "max_length = 32"]
    lines += [f"{key} = {value}" for key, value in top.items()]
    lines += ["[optim]", "max_steps = 2", "batch_size = 8", "[[tasks]]", 'preset = "mnli"',
              f'train = "{task["train"]}"']  # fmt: skip
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@pytest.mark.parametrize("kind", ("empty", "truncated"))
def test_train_exits_2(tiny_xlmr_checkpoint: Path, tmp_path: Path, kind: str) -> None:
    base = _damage(tiny_xlmr_checkpoint, tmp_path / "base", kind)
    result = CliRunner().invoke(app, ["train", str(_train_config(base, tmp_path)), "--no-progress"])
    _one_error_line(result, base / "model.safetensors")
    assert not (tmp_path / "out").exists()


def test_train_refuses_a_pickle_only_base_like_export(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_xlmr_checkpoint, base)
    (base / "model.safetensors").unlink()
    (base / "pytorch_model.bin").write_bytes(b"\x80\x04 not unpickled")
    result = CliRunner().invoke(app, ["train", str(_train_config(base, tmp_path)), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "pytorch_model.bin" in result.stderr and "safetensors" in result.stderr
    assert "Traceback" not in result.output
