"""Hand-edited values out of range: an export's manifest (max_length, pad_token_id), non-finite
numbers in a trainer config, invalid UTF-8 in trainer data files, a max_length beyond the
model's positions. Each is one line naming the file (and key or line), exit 2, before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trainer_data
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core.errors import InputError


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path_factory.getbasetemp() / "edited-cache"))


@pytest.fixture(scope="module")
def export_dir(tiny_xlmr_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from exporters import ExportConfig, export_checkpoint

    out = tmp_path_factory.mktemp("edited") / "export"
    export_checkpoint(tiny_xlmr_checkpoint, out, ExportConfig(dtype="fp32"))
    return out


def _edited(export_dir: Path, target: Path, **values) -> Path:
    shutil.copytree(export_dir, target)
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(values)
    (target / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_length", -5, "'max_length' must be an integer >= 2, got -5"),
        ("max_length", "abc", "'max_length' must be an integer >= 2, got 'abc'"),
        ("max_length", 100000, "'max_length' 100000 exceeds the 128 tokens"),
        ("pad_token_id", 99999, "'pad_token_id' 99999 is outside the tokenizer's vocabulary"),
        ("pad_token_id", -1, "'pad_token_id' must be an integer >= 0"),
        ("layers", [7], "'layers' must be hidden-state indices 0..2"),
    ],
)
@pytest.mark.parametrize("backend", ("ort", "torch"))
def test_embed_refuses_out_of_range_manifest_values(
    export_dir: Path, tmp_path: Path, key: str, value, message: str, backend: str
) -> None:
    model = _edited(export_dir, tmp_path / "edited", **{key: value})
    text = tmp_path / "in.txt"
    # Long enough to need every position, so that a max_length beyond them would be used.
    text.write_text("the cat " * 200 + "\nle chat\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(
        app, ["embed", str(model), str(text), "--out", str(out), "--device", "cpu",
              "--backend", backend, "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"error: {model / 'manifest.json'}: {message}" in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_an_untouched_export_and_a_lower_max_length_still_load(
    export_dir: Path, tmp_path: Path
) -> None:
    from xretrieve.encoding import load_encoder

    assert load_encoder(export_dir, device="cpu").tokenizer.max_length == 128
    lowered = _edited(export_dir, tmp_path / "lowered", max_length=16)
    encoder = load_encoder(lowered, device="cpu")
    assert encoder.tokenizer.max_length == 16
    assert encoder.encode(["the cat " * 40]).shape == (1, 32)


def _config(base: Path, tmp_path: Path, optim: str = "", top: str = "", task: str = "") -> Path:
    data = trainer_data.write_pair_task(tmp_path / "data")
    config = tmp_path / "run.toml"
    config.write_text(
        f'base = "{base}"\noutput_dir = "out"\nmax_length = 32\n{top}\n'
        f"[optim]\nmax_steps = 2\nbatch_size = 8\n{optim}\n"
        f'[[tasks]]\npreset = "mnli"\ntrain = "{data["train"]}"\n{task}\n',
        encoding="utf-8",
    )
    return config


@pytest.mark.parametrize(
    ("optim", "key"),
    [
        ("learning_rate = nan", "optim.learning_rate"),
        ("learning_rate = inf", "optim.learning_rate"),
        ("weight_decay = -nan", "optim.weight_decay"),
        ("max_grad_norm = +inf", "optim.max_grad_norm"),
        ("betas = [0.9, nan]", "optim.betas"),
        ("betas = [1.5, 0.999]", "optim.betas"),
    ],
)
def test_non_finite_numbers_in_the_config_are_refused(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, optim: str, key: str
) -> None:
    from xretrieve.trainer import load_config

    config = _config(tiny_xlmr_checkpoint, tmp_path, optim=optim)
    with pytest.raises(InputError, match=f"'{key}'") as info:
        load_config(config)
    assert info.value.path == config
    result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 2 and f"'{key}'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_non_finite_numbers_in_a_yaml_config_are_refused(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    from xretrieve.trainer import load_config

    data = trainer_data.write_pair_task(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"base: {tiny_xlmr_checkpoint}\noptim:\n  learning_rate: .nan\n"
        f"tasks:\n  - preset: mnli\n    train: {data['train']}\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="'optim.learning_rate': must be a finite number"):
        load_config(config)


@pytest.mark.parametrize("suffix", (".jsonl", ".txt", ".conll", ".json"))
def test_invalid_utf8_in_a_data_file_names_file_and_line(tmp_path: Path, suffix: str) -> None:
    from xretrieve.trainer import config_from_dict
    from xretrieve.trainer.readers import read_task_file

    good = {
        ".jsonl": b'{"text": "the cat"}\n',
        ".txt": b"the cat\n",
        ".conll": b"the F\ncat N\n\n",
        ".json": b'{"data": [\n',
    }[suffix]
    path = tmp_path / f"train{suffix}"
    path.write_bytes(good * 3 + b"caf\xe9 au lait\n" + good)
    preset = {".jsonl": "mlm", ".txt": "mlm", ".conll": "conll", ".json": "squad"}[suffix]
    config = config_from_dict({"tasks": [{"preset": preset, "train": str(path)}]})
    with pytest.raises(InputError, match="invalid UTF-8") as info:
        read_task_file(config.tasks[0], path, None, None)
    assert info.value.path == path and info.value.line == good.count(b"\n") * 3 + 1


def test_invalid_utf8_in_a_jsonl_task_through_the_cli(
    tiny_xlmr_checkpoint: Path, tmp_path: Path
) -> None:
    config = _config(tiny_xlmr_checkpoint, tmp_path)
    train = tmp_path / "data" / "pair_train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    lines[4] = b'{"sentence1": "caf\xe9", "sentence2": "cat", "gold_label": "entailment"}\n'
    train.write_bytes(b"".join(lines))
    result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert f"error: {train}:5: invalid UTF-8" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("top", "task", "asked"),
    [
        ("max_length = 200", "", "max_length = 200"),
        ("", "max_length = 129", "tasks 'mnli' max_length = 129"),
    ],
)
def test_max_length_beyond_the_positions_is_refused_at_the_start(
    tiny_xlmr_checkpoint: Path, tmp_path: Path, top: str, task: str, asked: str
) -> None:
    config = _config(tiny_xlmr_checkpoint, tmp_path, top=top, task=task)
    text = config.read_text(encoding="utf-8").replace("max_length = 32\n", "", 1)
    config.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 2, result.output
    # The tiny XLM-R has 130 position embeddings, two of them unused: 128 usable.
    expected = f"{tiny_xlmr_checkpoint / 'config.json'}: the model has 128 usable positions"
    assert expected in result.stderr and asked in result.stderr
    assert not (tmp_path / "out").exists()


def test_max_length_at_the_positions_trains(tiny_xlmr_checkpoint: Path, tmp_path: Path) -> None:
    config = _config(tiny_xlmr_checkpoint, tmp_path, task="max_length = 128")
    result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
