"""exporters/st_pipeline.py: reading a sentence-transformers folder's pipeline, and refusing by
name every module or setting the exporter does not reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from st_models import write_legacy_format
from typer.testing import CliRunner

from exporters.st_pipeline import read_sentence_pipeline
from xretrieve.cli.app import app
from xretrieve.core.errors import InputError
from xretrieve.core.settings import Pooling

pytest.importorskip("sentence_transformers")

runner = CliRunner()


def _copy(st_folder, name: str, where: Path) -> Path:
    return shutil.copytree(st_folder(name), where / name)


def _edit(path: Path, change) -> None:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def test_labse_shaped_pipeline_is_read(st_folder) -> None:
    pipeline = read_sentence_pipeline(st_folder("labse"))
    assert pipeline.modules == ("Transformer", "Pooling", "Dense", "Normalize")
    assert pipeline.pooling is Pooling.CLS and pipeline.include_prompt and pipeline.normalize
    (dense,) = pipeline.dense
    assert (dense.in_features, dense.out_features, dense.activation) == (32, 32, "Tanh")
    assert pipeline.dim == 32 and pipeline.transformer_path == ""


def test_prompts_and_the_prompt_xretrieve_uses(st_folder) -> None:
    with_default = read_sentence_pipeline(st_folder("prompt-excluded"))
    assert {"query": "query: ", "passage": "passage: "}.items() <= with_default.prompts.items()
    assert with_default.prompt() == ("query", "query: ") and not with_default.include_prompt
    # No default prompt: "query", the prompt of both sides of a symmetric task.
    assert read_sentence_pipeline(st_folder("cls-prompt-excluded")).prompt() == ("query", "query: ")


def test_a_plain_checkpoint_has_no_pipeline(tiny_bert_checkpoint) -> None:
    assert read_sentence_pipeline(tiny_bert_checkpoint) is None


@pytest.mark.parametrize(
    ("module_type", "message"),
    [
        ("my_package.pooling.MyPooling", "module 1 is 'my_package.pooling.MyPooling', custom code"),
        ("sentence_transformers.models.Asym", "module 1 is sentence-transformers' Asym"),
        ("sentence_transformers.models.CNN", "module 1 is sentence-transformers' CNN"),
        ("sentence_transformers.models.LSTM", "module 1 is sentence-transformers' LSTM"),
        (
            "sentence_transformers.models.WeightedLayerPooling",
            "module 1 is sentence-transformers' WeightedLayerPooling",
        ),
    ],
)
def test_unknown_modules_are_refused_by_name(module_type, message, st_folder, tmp_path) -> None:
    folder = _copy(st_folder, "labse", tmp_path)
    _edit(folder / "modules.json", lambda modules: modules[1].update(type=module_type))
    with pytest.raises(InputError, match=message) as caught:
        read_sentence_pipeline(folder)
    assert caught.value.path == folder / "modules.json"


def test_word_embeddings_model_is_refused(st_folder, tmp_path) -> None:
    folder = _copy(st_folder, "labse", tmp_path)
    _edit(
        folder / "modules.json",
        lambda modules: modules[0].update(type="sentence_transformers.models.WordEmbeddings"),
    )
    with pytest.raises(InputError, match="module 0 is sentence-transformers' WordEmbeddings"):
        read_sentence_pipeline(folder)


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([1, 0, 2, 3], "the modules are Pooling, Transformer, Dense, Normalize"),
        ([0, 1, 3, 2], "the modules are Transformer, Pooling, Normalize, Dense"),
        ([0, 2, 3], "the modules are Transformer, Dense, Normalize"),
    ],
)
def test_modules_out_of_order_are_refused(order, message, st_folder, tmp_path) -> None:
    folder = _copy(st_folder, "labse", tmp_path)
    _edit(folder / "modules.json", lambda modules: modules.__setitem__(
        slice(None), [modules[i] for i in order]
    ))  # fmt: skip
    with pytest.raises(InputError, match=message):
        read_sentence_pipeline(folder)


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "1_Pooling/config.json",
            lambda c: c.update(pooling_mode=["cls", "mean"]),
            "pooling modes cls, mean together",
        ),
        (
            "1_Pooling/config.json",
            lambda c: c.update(pooling_mode="median"),
            "unknown pooling mode",
        ),
        (
            "2_Dense/config.json",
            lambda c: c.update(activation_function="my_package.Swish"),
            "activation_function 'my_package.Swish' is not supported",
        ),
        ("2_Dense/config.json", lambda c: c.update(use_residual=True), "use_residual"),
        ("2_Dense/config.json", lambda c: c.update(in_features=16), "in_features 16 does not"),
        (
            "sentence_bert_config.json",
            lambda c: c.update(model_kwargs={"torch_dtype": "float16"}),
            "model_kwargs",
        ),
        ("sentence_bert_config.json", lambda c: c.update(novel=1), "unknown settings novel"),
        (
            "config_sentence_transformers.json",
            lambda c: c.update(model_type="SparseEncoder"),
            "model_type 'SparseEncoder' is not supported",
        ),
        (
            "config_sentence_transformers.json",
            lambda c: c.update(default_prompt_name="passage"),
            "default_prompt_name 'passage' is not among the prompts",
        ),
    ],
)
def test_settings_the_exporter_does_not_reproduce_are_refused(
    file, change, message, st_folder, tmp_path
) -> None:
    folder = _copy(st_folder, "labse", tmp_path)
    _edit(folder / file, change)
    with pytest.raises(InputError, match=message) as caught:
        read_sentence_pipeline(folder)
    assert caught.value.path == folder / file


def test_dense_weights_must_be_safetensors(st_folder, tmp_path) -> None:
    from exporters.wrapper import sentence_encoder

    folder = _copy(st_folder, "labse", tmp_path)
    (folder / "2_Dense" / "model.safetensors").rename(folder / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(InputError, match="only pytorch_model.bin, a pickle"):
        sentence_encoder(folder)


def test_older_format_reads_the_same_pipeline(st_folder, tmp_path) -> None:
    folder = _copy(st_folder, "labse", tmp_path)
    write_legacy_format(folder, transformer_subfolder=True)
    pipeline = read_sentence_pipeline(folder)
    own = read_sentence_pipeline(st_folder("labse"))
    assert pipeline.transformer_path == "0_Transformer" and pipeline.max_seq_length == 48
    assert (pipeline.pooling, pipeline.dense, pipeline.normalize) == (
        own.pooling,
        own.dense,
        own.normalize,
    )


@pytest.mark.parametrize("command", ["export", "embed", "mine"])
def test_cli_refuses_an_unknown_module_in_one_line(command, st_folder, tmp_path) -> None:
    folder = _copy(st_folder, "labse", tmp_path)
    _edit(
        folder / "modules.json",
        lambda modules: modules[2].update(type="sentence_transformers.models.CNN"),
    )
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n", encoding="utf-8")
    out = tmp_path / "out"
    arguments = {
        "export": ["export", str(folder), "--out", str(out), "--dtype", "fp32"],
        "embed": ["embed", str(folder), str(texts), "--out", str(out), "--device", "cpu"],
        "mine": ["mine", "--model", str(folder), "--src-file", str(texts), "--tgt-file",
                 str(texts), "--out", str(out), "--device", "cpu"],
    }[command]  # fmt: skip
    result = runner.invoke(app, [*arguments, "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "modules.json" in lines[0]
    assert "module 2 is sentence-transformers' CNN" in lines[0]
    assert not out.exists()
