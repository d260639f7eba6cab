"""exporters/: checkpoint -> ONNX export, checked against torch hidden states computed here
independently of the exporter's wrapper (masked mean of hidden_states[l], then L2)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_models import SAMPLE_SENTENCES, make_tiny_checkpoint
from typer.testing import CliRunner

from exporters import (
    Dtype,
    ExportConfig,
    ExportValidationError,
    FusionError,
    Pooling,
    export_checkpoint,
    read_manifest,
    resolve_layers,
    validate_export,
)
from xretrieve.core.cache import content_hash
from xretrieve.core.errors import InputError, XRetrieveError

REQUIRED_MANIFEST_KEYS = {
    "format_version",
    "source_checkpoint",
    "source_hash",
    "model_type",
    "num_hidden_layers",
    "layers",
    "pooling",
    "normalize",
    "dtype",
    "opset",
    "text_prefix",
    "max_length",
    "dim",
    "pad_token_id",
    "fusion",
    "validation",
    "versions",
    "created",
    "onnx_files",
}


# ---------------------------------------------------------------- helpers


def _feeds(export_dir: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """Tokenise with the export's own tokenizer only: the export directory must be enough."""
    from transformers import AutoTokenizer

    manifest = read_manifest(export_dir)
    tokenizer = AutoTokenizer.from_pretrained(export_dir, local_files_only=True)
    encoded = tokenizer(
        [manifest.text_prefix + text for text in texts],
        padding=True,
        truncation=True,
        max_length=manifest.max_length,
        return_tensors="np",
    )
    return {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


def _run_onnx(export_dir: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _torch_hidden_states(checkpoint: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All hidden states of the plain transformers model (its default attention)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model(
            input_ids=torch.from_numpy(feeds["input_ids"]),
            attention_mask=torch.from_numpy(feeds["attention_mask"]),
            output_hidden_states=True,
        )
    return [state.numpy().astype(np.float64) for state in out.hidden_states]


def _pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        weights = mask[:, :, None].astype(np.float64)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    if normalize:
        pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _export(checkpoint: Path, out: Path, **settings) -> Path:
    export_checkpoint(checkpoint, out, ExportConfig(**settings))
    return out


# ---------------------------------------------------------------- shared exports


@pytest.fixture(scope="module")
def xlmr_fp32(tiny_xlmr_checkpoint, tmp_path_factory) -> Path:
    return _export(tiny_xlmr_checkpoint, tmp_path_factory.mktemp("exp") / "xlmr-fp32", dtype="fp32")


@pytest.fixture(scope="module")
def xlmr_fp16(tiny_xlmr_checkpoint, tmp_path_factory) -> Path:
    return _export(tiny_xlmr_checkpoint, tmp_path_factory.mktemp("exp") / "xlmr-fp16", dtype="fp16")


@pytest.fixture(scope="module")
def xlmr_layers(tiny_xlmr_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "xlmr-layers"
    return _export(tiny_xlmr_checkpoint, out, dtype="fp32", layers=(1, -1, 0))


# ---------------------------------------------------------------- round trip and parity


def test_fp32_export_matches_independent_torch(xlmr_fp32, tiny_xlmr_checkpoint):
    feeds = _feeds(xlmr_fp32, SAMPLE_SENTENCES)
    assert (feeds["attention_mask"] == 0).any(), "the batch must contain padding"
    outputs = _run_onnx(xlmr_fp32, feeds)
    assert list(outputs) == ["embeddings"]
    embeddings = outputs["embeddings"]
    assert embeddings.dtype == np.float32
    assert embeddings.shape == (len(SAMPLE_SENTENCES), 32)
    hidden = _torch_hidden_states(tiny_xlmr_checkpoint, feeds)
    expected = _pool(hidden[-1], feeds["attention_mask"], "mean", True)
    np.testing.assert_allclose(embeddings, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_dynamic_axes_accept_other_batch_sizes_and_lengths(xlmr_fp32, tiny_xlmr_checkpoint):
    for texts in (["a"], SAMPLE_SENTENCES[:3], ["the cat " * 100] * 2):
        feeds = _feeds(xlmr_fp32, texts)
        embeddings = _run_onnx(xlmr_fp32, feeds)["embeddings"]
        expected = _pool(
            _torch_hidden_states(tiny_xlmr_checkpoint, feeds)[-1],
            feeds["attention_mask"],
            "mean",
            True,
        )
        assert embeddings.shape == (len(texts), 32)
        np.testing.assert_allclose(embeddings, expected, atol=2e-5)


def test_manifest_contents(xlmr_fp32, tiny_xlmr_checkpoint):
    payload = json.loads((xlmr_fp32 / "manifest.json").read_text())
    assert REQUIRED_MANIFEST_KEYS <= set(payload)
    assert payload["source_checkpoint"] == str(Path(tiny_xlmr_checkpoint).resolve())
    assert payload["source_hash"] == content_hash(tiny_xlmr_checkpoint)
    assert payload["model_type"] == "xlm-roberta"
    assert payload["layers"] == [2]
    assert payload["pooling"] == "mean" and payload["normalize"] is True
    assert payload["dtype"] == "fp32" and payload["opset"] == 17
    assert payload["max_length"] == 128 and payload["dim"] == 32
    assert payload["pad_token_id"] == 1
    assert payload["outputs"] == ["embeddings"]
    assert payload["onnx_files"] == ["model.onnx"]
    assert payload["fusion"]["Attention"] == 2
    validation = payload["validation"]
    assert validation["mean_cosine"] > 0.99999 and validation["min_cosine"] > 0.9999
    assert 0 <= validation["max_abs_diff"] < 1e-4
    assert validation["batch_sizes"] == [8, 3]
    assert max(validation["lengths"]) == 128  # the long text is truncated at max_length
    assert len(set(validation["lengths"])) > 5
    assert {"torch", "transformers", "onnx", "onnxruntime", "xretrieve"} <= set(payload["versions"])
    manifest = read_manifest(xlmr_fp32)
    assert manifest.to_json() == payload
    assert manifest.pooling is Pooling.MEAN and manifest.dtype is Dtype.FP32


def test_export_directory_alone_is_enough(xlmr_fp32, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(xlmr_fp32, moved)
    feeds = _feeds(moved, ["le chat est sur la table"])
    assert _run_onnx(moved, feeds)["embeddings"].shape == (1, 32)
    assert {"model.onnx", "manifest.json", "tokenizer.json", "tokenizer_config.json"} <= {
        path.name for path in moved.iterdir()
    }


def test_fp16_export_keeps_float32_io_and_matches_torch(xlmr_fp16, xlmr_fp32):
    import onnx

    model = onnx.load(str(xlmr_fp16 / "model.onnx"))
    float_types = [
        init.data_type
        for init in model.graph.initializer
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        and np.prod(init.dims) > 1
    ]
    # Every weight matrix and vector is half precision.
    assert float_types and set(float_types) == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64] * 2
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    # ONNX Runtime 1.31 runs the fused fp16 graph on the CPU execution provider too.
    feeds = _feeds(xlmr_fp16, SAMPLE_SENTENCES)
    half = _run_onnx(xlmr_fp16, feeds)["embeddings"]
    full = _run_onnx(xlmr_fp32, feeds)["embeddings"]
    assert half.dtype == np.float32
    assert _cosines(half, full).mean() > 0.999
    manifest = read_manifest(xlmr_fp16)
    assert manifest.dtype is Dtype.FP16 and manifest.validation.mean_cosine > 0.999
    assert manifest.fusion["Attention"] == 2


def test_fusion_counts_on_tiny_models(xlmr_fp32, tiny_bert_checkpoint, tmp_path):
    # Per layer: one Attention, two SkipLayerNormalization, one BiasGelu.
    expected = {"Attention": 2, "SkipLayerNormalization": 4, "BiasGelu": 2}
    xlmr = read_manifest(xlmr_fp32).fusion
    assert {name: xlmr[name] for name in expected} == expected
    assert xlmr["EmbedLayerNormalization"] == 0  # RoBERTa-style position ids do not fuse
    bert = read_manifest(_export(tiny_bert_checkpoint, tmp_path / "bert", dtype="fp32")).fusion
    assert {name: bert[name] for name in expected} == expected
    assert bert["EmbedLayerNormalization"] == 1


# ---------------------------------------------------------------- layers and pooling


def test_multi_layer_outputs_match_hidden_states(xlmr_layers, tiny_xlmr_checkpoint):
    manifest = read_manifest(xlmr_layers)
    assert manifest.layers == (1, 2, 0)
    assert manifest.outputs == ("embeddings", "layer_embeddings")
    feeds = _feeds(xlmr_layers, SAMPLE_SENTENCES)
    outputs = _run_onnx(xlmr_layers, feeds)
    hidden = _torch_hidden_states(tiny_xlmr_checkpoint, feeds)
    stacked = outputs["layer_embeddings"]
    assert stacked.shape == (len(SAMPLE_SENTENCES), 3, 32)
    for position, layer in enumerate((1, 2, 0)):
        expected = _pool(hidden[layer], feeds["attention_mask"], "mean", True)
        np.testing.assert_allclose(stacked[:, position], expected, atol=2e-5)
    np.testing.assert_allclose(outputs["embeddings"], stacked[:, 0], atol=1e-6)


def test_intermediate_layer_runs_no_later_layers(tiny_xlmr_checkpoint, tmp_path):
    out = _export(tiny_xlmr_checkpoint, tmp_path / "l1", dtype="fp32", layers=(-2,))
    manifest = read_manifest(out)
    assert manifest.layers == (1,)
    # Only the first transformer layer is in the graph.
    assert manifest.fusion["Attention"] == 1
    feeds = _feeds(out, SAMPLE_SENTENCES)
    expected = _pool(
        _torch_hidden_states(tiny_xlmr_checkpoint, feeds)[1], feeds["attention_mask"], "mean", True
    )
    np.testing.assert_allclose(_run_onnx(out, feeds)["embeddings"], expected, atol=2e-5)


def test_cls_pooling_without_normalisation(tiny_bert_checkpoint, tmp_path):
    out = _export(
        tiny_bert_checkpoint, tmp_path / "cls", dtype="fp32", pooling="cls", normalize=False
    )
    manifest = read_manifest(out)
    assert manifest.pooling is Pooling.CLS and manifest.normalize is False
    feeds = _feeds(out, SAMPLE_SENTENCES)
    embeddings = _run_onnx(out, feeds)["embeddings"]
    hidden = _torch_hidden_states(tiny_bert_checkpoint, feeds)
    expected = _pool(hidden[-1], feeds["attention_mask"], "cls", False)
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    assert not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0)


def test_text_prefix_and_max_length_are_recorded(tiny_bert_checkpoint, tmp_path):
    out = _export(
        tiny_bert_checkpoint, tmp_path / "p", dtype="fp32", text_prefix="query: ", max_length=32
    )
    manifest = read_manifest(out)
    assert manifest.text_prefix == "query: " and manifest.max_length == 32
    assert max(manifest.validation.lengths) == 32
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out, local_files_only=True).model_max_length == 32


def test_projection_head_is_exported_and_checked(tiny_xlmr_checkpoint, tmp_path):
    from safetensors.numpy import save_file

    checkpoint = tmp_path / "with-projection"
    shutil.copytree(tiny_xlmr_checkpoint, checkpoint)
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((5, 32)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    save_file({"weight": weight, "bias": bias}, str(checkpoint / "projection.safetensors"))
    info = {"in_dim": 32, "out_dim": 5, "pooling": "mean", "layer": -1, "normalize": True}
    (checkpoint / "projection.json").write_text(json.dumps(info))

    manifest = export_checkpoint(
        checkpoint, tmp_path / "proj", ExportConfig(dtype="fp32", projection=True)
    )
    assert manifest.dim == 5 and manifest.projection["out_dim"] == 5
    assert read_manifest(tmp_path / "proj").projection == manifest.projection
    feeds = _feeds(tmp_path / "proj", SAMPLE_SENTENCES)
    embeddings = _run_onnx(tmp_path / "proj", feeds)["embeddings"]
    pooled = _pool(
        _torch_hidden_states(checkpoint, feeds)[-1], feeds["attention_mask"], "mean", False
    )
    projected = pooled @ weight.T + bias
    expected = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, expected, atol=2e-5)

    with pytest.raises(XRetrieveError, match="trained on layer 2"):
        export_checkpoint(checkpoint, tmp_path / "bad", ExportConfig(layers=(1,), projection=True))
    with pytest.raises(InputError, match="no projection head"):
        export_checkpoint(tiny_xlmr_checkpoint, tmp_path / "none", ExportConfig(projection=True))
    assert not (tmp_path / "bad").exists() and not (tmp_path / "none").exists()


def test_wrapper_leaves_the_model_unchanged(tiny_xlmr_checkpoint):
    import torch

    from exporters import PooledEncoder, load_checkpoint

    model, config = load_checkpoint(tiny_xlmr_checkpoint)
    assert not model.training and config.model_type == "xlm-roberta"
    encoder = PooledEncoder(model, (1,), Pooling.MEAN, normalize=True)
    assert len(encoder.encoder.encoder.layer) == 1
    assert len(model.encoder.layer) == 2
    assert model.pooler is None  # never used for sentence embeddings, so never built
    projection = torch.nn.Linear(32, 8)
    projected = PooledEncoder(model, (-1,), "cls", normalize=True, projection=projection)
    ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
    mask = (ids != 1).long()
    with torch.inference_mode():
        out = projected(ids, mask)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        expected = torch.nn.functional.normalize(projection(hidden.hidden_states[-1][:, 0]), dim=-1)
    assert projected.dim == 8 and out.shape == (2, 8)
    torch.testing.assert_close(out, expected)


def test_distilbert_is_supported(tiny_bert_checkpoint, tmp_path):
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_checkpoint)
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    checkpoint = tmp_path / "distilbert"
    DistilBertModel(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    manifest = export_checkpoint(checkpoint, tmp_path / "out", ExportConfig(dtype="fp32"))
    assert manifest.fusion["Attention"] == 2
    assert manifest.validation.min_cosine > 0.9999


# ---------------------------------------------------------------- large graphs, failures


def test_external_data_export_loads_and_validates(tiny_xlmr_checkpoint, tmp_path, monkeypatch):
    import exporters.optimize

    # Stands in for a > 2 GiB model (XLM-R large in fp32), which protobuf cannot hold.
    monkeypatch.setattr(exporters.optimize, "EXTERNAL_DATA_THRESHOLD", 0)
    out = tmp_path / "ext"
    manifest = export_checkpoint(tiny_xlmr_checkpoint, out, ExportConfig(dtype="fp32"))
    assert manifest.onnx_files == ("model.onnx", "model.onnx.data")
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    report = validate_export(out, tiny_xlmr_checkpoint)
    assert report.ok and report.figures.min_cosine > 0.9999


def test_unfused_attention_is_an_error(tiny_xlmr_checkpoint, tmp_path):
    """transformers' SDPA attention traces to a graph the optimizer does not fuse: the export
    must say so rather than ship a slow graph (and accept it with optimize=False)."""
    from exporters import PooledEncoder, load_checkpoint
    from exporters.manifest import EMBEDDINGS
    from exporters.onnx_export import trace_to_onnx
    from exporters.optimize import optimize_graph

    model, config = load_checkpoint(tiny_xlmr_checkpoint, attn_implementation="sdpa")
    wrapper = PooledEncoder(model, (-1,), Pooling.MEAN, True)
    import torch

    example = {"input_ids": torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])}
    example["attention_mask"] = (example["input_ids"] != 1).long()
    raw = tmp_path / "raw.onnx"
    trace_to_onnx(wrapper, raw, example, (EMBEDDINGS,), 17)
    settings = dict(model_type="xlm-roberta", num_heads=2, hidden_size=32, layers_run=2)
    with pytest.raises(FusionError, match="fused 0 attention blocks for 2 layers"):
        optimize_graph(raw, tmp_path / "opt.onnx", dtype=Dtype.FP32, **settings)
    assert (
        optimize_graph(raw, tmp_path / "plain.onnx", dtype=Dtype.FP32, optimize=False, **settings)
        == {}
    )


def test_validation_reports_every_failure(xlmr_fp32, tiny_xlmr_checkpoint, tmp_path):
    import onnx
    from onnx import numpy_helper

    broken = tmp_path / "broken"
    shutil.copytree(xlmr_fp32, broken)
    model = onnx.load(str(broken / "model.onnx"))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(-values[::-1].copy(), init.name))
    # A batch axis fixed at 8: the first validation batch runs, the second (3 texts) cannot.
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    onnx.save(model, str(broken / "model.onnx"))
    with pytest.raises(ExportValidationError) as caught:
        validate_export(broken, tiny_xlmr_checkpoint)
    error = caught.value
    assert any("input_ids is not [batch, sequence] with dynamic axes" in f for f in error.failures)
    assert any("failed on a batch of shape (3, " in failure for failure in error.failures)
    assert any("mean cosine" in failure for failure in error.failures)
    assert any("min cosine" in failure for failure in error.failures)
    assert error.report.figures.mean_cosine < 0.999
    assert "max abs diff" in str(error)


def test_validation_against_another_checkpoint(xlmr_fp32, tiny_bert_checkpoint):
    with pytest.raises(ExportValidationError, match="content hash") as caught:
        validate_export(xlmr_fp32, tiny_bert_checkpoint)
    assert caught.value.report.figures is None


def test_failed_validation_leaves_no_directory(tiny_xlmr_checkpoint, tmp_path, monkeypatch):
    import exporters.validate

    monkeypatch.setitem(exporters.validate.MIN_MEAN_COSINE, Dtype.FP32, 1.1)
    out = tmp_path / "never"
    with pytest.raises(ExportValidationError, match="mean cosine"):
        export_checkpoint(tiny_xlmr_checkpoint, out, ExportConfig(dtype="fp32"))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bad input


def _copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit_json(path: Path, **changes) -> None:
    payload = json.loads(path.read_text())
    payload.update(changes)
    path.write_text(json.dumps(payload))


def test_missing_directory_and_files(tiny_xlmr_checkpoint, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    no_config = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "no-config")
    (no_config / "config.json").unlink()
    with pytest.raises(InputError, match="no config.json"):
        export_checkpoint(no_config, tmp_path / "out")
    no_weights = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no model.safetensors"):
        export_checkpoint(no_weights, tmp_path / "out")
    no_tokenizer = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(InputError, match="no tokenizer files"):
        export_checkpoint(no_tokenizer, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickle_weights_are_refused_unread(tiny_xlmr_checkpoint, tmp_path):
    checkpoint = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "bin")
    (checkpoint / "model.safetensors").unlink()
    # Not even a valid pickle: it must be refused before anything tries to read it.
    (checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(InputError, match="pytorch_model.bin.*safetensors"):
        export_checkpoint(checkpoint, tmp_path / "out")


def test_remote_code_is_refused(tiny_xlmr_checkpoint, tmp_path):
    checkpoint = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "remote")
    _edit_json(checkpoint / "config.json", auto_map={"AutoModel": "modeling_evil.EvilModel"})
    (checkpoint / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(InputError, match="remote code"):
        export_checkpoint(checkpoint, tmp_path / "out")
    tokenizer_only = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "remote-tok")
    _edit_json(
        tokenizer_only / "tokenizer_config.json",
        auto_map={"AutoTokenizer": ["tok.EvilTokenizer", None]},
    )
    with pytest.raises(InputError, match="remote code"):
        export_checkpoint(tokenizer_only, tmp_path / "out")


def test_unsupported_architecture(tiny_xlmr_checkpoint, tmp_path):
    checkpoint = _copy_checkpoint(tiny_xlmr_checkpoint, tmp_path / "gpt2")
    _edit_json(checkpoint / "config.json", model_type="gpt2")
    with pytest.raises(InputError, match="unsupported model_type 'gpt2'"):
        export_checkpoint(checkpoint, tmp_path / "out")


def test_bad_settings(tiny_xlmr_checkpoint, tmp_path):
    with pytest.raises(XRetrieveError, match="layer 3 is out of range"):
        export_checkpoint(tiny_xlmr_checkpoint, tmp_path / "out", ExportConfig(layers=(3,)))
    with pytest.raises(XRetrieveError, match="layer -4 is out of range"):
        export_checkpoint(tiny_xlmr_checkpoint, tmp_path / "out", ExportConfig(layers=(-4,)))
    with pytest.raises(XRetrieveError, match="exceeds the 128 positions"):
        export_checkpoint(tiny_xlmr_checkpoint, tmp_path / "out", ExportConfig(max_length=256))
    with pytest.raises(XRetrieveError, match="pooling must be one of mean, cls, max"):
        ExportConfig(pooling="median")
    with pytest.raises(XRetrieveError, match="dtype must be one of fp16, fp32, int8, auto"):
        ExportConfig(dtype="int4")
    assert not (tmp_path / "out").exists()


def test_resolve_layers():
    assert resolve_layers((-1,), 12) == (12,)
    assert resolve_layers((0, -12, 6, -2), 12) == (0, 1, 6, 11)
    assert resolve_layers((0,), 12) == (0,)
    with pytest.raises(XRetrieveError, match="out of range"):
        resolve_layers((-13 - 1,), 12)
    with pytest.raises(XRetrieveError, match="same layer twice"):
        resolve_layers((-1, 12), 12)
    with pytest.raises(XRetrieveError, match="at least one"):
        resolve_layers((), 12)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="not an xretrieve export"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 99}')
    with pytest.raises(InputError, match="format_version 99"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(InputError, match="incomplete"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------- CLI


def test_cli_export_json_and_table(tiny_bert_checkpoint, tmp_path):
    from xretrieve.cli.app import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        ["export", str(tiny_bert_checkpoint), "--out", str(out), "--dtype", "fp32",
         "--layers", "-1,1", "--pooling", "cls", "--no-normalize", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload == read_manifest(out).to_json()
    assert payload["layers"] == [2, 1] and payload["pooling"] == "cls"
    assert payload["normalize"] is False and payload["dtype"] == "fp32"
    result = runner.invoke(
        app,
        ["export", str(tiny_bert_checkpoint), "--out", str(out), "--layer", "-2", "--no-optimize"],
    )
    assert result.exit_code == 0, result.output
    assert "mean cosine to torch" in result.stdout and "validated on" in result.stdout
    manifest = read_manifest(out)
    assert manifest.layers == (1,) and manifest.dtype is Dtype.FP16 and manifest.fusion == {}


def test_cli_errors_exit_2(tiny_xlmr_checkpoint, tmp_path):
    from xretrieve.cli.app import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["export", str(tiny_xlmr_checkpoint), "--out", str(tmp_path / "o"), "--layer", "7"]
    )
    assert result.exit_code == 2
    assert "layer 7 is out of range" in result.stderr
    result = runner.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(
        app, ["export", str(tiny_xlmr_checkpoint), "--out", str(tmp_path / "o"), "--layers", "1,x"]
    )
    assert result.exit_code == 2 and "comma-separated integers" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_export_default_and_a_hub_id(tiny_xlmr_checkpoint, tmp_path, monkeypatch):
    """Issue 17 item 20: ``export default`` failed with "checkpoint directory does not exist"
    although ``default`` works in every other command; a hub id ``org/name`` likewise."""
    from xretrieve.cli.app import app
    from xretrieve.encoding import default_model

    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The default model is the folder $XRETRIEVE_DEFAULT_MODEL_DIR names (the tiny model here).
    default_dir = tmp_path / "default-model"
    shutil.copytree(tiny_xlmr_checkpoint, default_dir)
    monkeypatch.setenv(default_model.DEFAULT_MODEL_DIR_ENV, str(default_dir))
    runner = CliRunner()
    result = runner.invoke(
        app, ["export", "default", "--out", str(tmp_path / "e"), "--dtype", "fp32", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "e")
    assert Path(manifest.source_checkpoint) == default_dir.resolve()
    assert manifest.text_prefix == "query: " and manifest.mining_threshold is not None
    # A Hugging Face id resolves through the (offline) hub cache, as --model does elsewhere.
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-xlmr"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    shutil.copytree(tiny_xlmr_checkpoint, repo / "snapshots" / revision)
    result = runner.invoke(
        app, ["export", "tiny-org/tiny-xlmr", "--out", str(tmp_path / "h"), "--dtype", "fp32",
              "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "h").source_checkpoint.endswith(revision)
    # A bad --out is refused before the model name is resolved.
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(default_model.DEFAULT_MODEL_DIR_ENV, str(tmp_path / "nowhere"))
    result = runner.invoke(app, ["export", "default", "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "must be a directory" in result.stderr, result.output


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_export_never_replaces_the_checkpoint_or_foreign_files(tiny_xlmr_checkpoint, tmp_path):
    from xretrieve.cli.app import app

    runner = CliRunner()
    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_xlmr_checkpoint, checkpoint)
    (checkpoint / "NOTES.md").write_text("x\n")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "NOTES.md").write_text("mine\n")
    before = {path: _tree(path) for path in (checkpoint, notes)}
    cases = [
        (checkpoint, "is an input"),
        (checkpoint / ".", "is an input"),
        (checkpoint / "export", "lies inside the input directory"),
        (tmp_path, "holds the input"),  # the checkpoint is inside it
        (notes, "not an earlier export output (no export manifest.json)"),
        (notes / "NOTES.md", "must be a directory; this is a file"),
    ]
    for out, message in cases:
        result = runner.invoke(
            app, ["export", str(checkpoint), "--out", str(out), "--dtype", "fp32"]
        )
        assert result.exit_code == 2, (out, result.output)
        assert message in result.stderr, (out, result.stderr)
    assert {path: _tree(path) for path in (checkpoint, notes)} == before
    assert not (checkpoint / "export").exists()


def test_an_earlier_export_is_replaced_only_when_it_holds_nothing_else(
    tiny_xlmr_checkpoint, tmp_path
):
    from exporters.onnx_export import EXPORT_OUTPUT
    from xretrieve.core.outputs import check_output_path

    out = tmp_path / "export"
    out.mkdir()  # an empty directory is fine
    _export(tiny_xlmr_checkpoint, out, dtype="fp32", optimize=False)
    check_output_path(out, directory=True, owner=EXPORT_OUTPUT)  # an earlier export
    (out / "NOTES.md").write_text("keep\n")
    with pytest.raises(XRetrieveError, match=r"also holds NOTES\.md"):
        _export(tiny_xlmr_checkpoint, out, dtype="fp32", optimize=False)
    assert (out / "NOTES.md").read_text() == "keep\n"
    (out / "NOTES.md").unlink()
    (out / "manifest.json").write_text("{broken")
    with pytest.raises(XRetrieveError, match="manifest is unreadable"):
        check_output_path(out, directory=True, owner=EXPORT_OUTPUT)


@pytest.mark.parametrize(
    ("drop", "add", "message"),
    [
        (
            ("embeddings.word_embeddings.weight",),
            (),
            r"missing embeddings\.word_embeddings\.weight",
        ),
        ((), ("encoder.layer.9.output.dense.weight",), r"unexpected encoder\.layer\.9\.output"),
    ],
)
def test_checkpoint_with_missing_or_unexpected_tensors_is_refused(
    tiny_xlmr_checkpoint, tmp_path, drop, add, message
):
    from tiny_models import edit_weights

    from xretrieve.cli.app import app

    checkpoint = tmp_path / "ck"
    shutil.copytree(tiny_xlmr_checkpoint, checkpoint)
    edit_weights(checkpoint, drop=drop, add=add)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(out), "--dtype", "fp32", "--no-optimize"]
    )
    assert result.exit_code == 2, result.output
    assert re.search(message, result.stderr), result.stderr
    assert "model.safetensors" in result.stderr and not out.exists()


def test_pretraining_head_weights_are_not_unexpected(tiny_xlmr_checkpoint, tmp_path):
    from tiny_models import edit_weights

    checkpoint = tmp_path / "mlm"
    shutil.copytree(tiny_xlmr_checkpoint, checkpoint)
    edit_weights(checkpoint, add=("lm_head.bias", "lm_head.dense.weight"))
    manifest = export_checkpoint(
        checkpoint, tmp_path / "out", ExportConfig(dtype="fp32", optimize=False)
    )
    assert manifest.validation is not None


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_large_fp16_export_fuses_and_matches_on_cuda(tmp_path):
    """An XLM-R-large-shaped random model (24 layers, 1024 wide, 16 heads; small vocabulary):
    full fusion, fp16 parity with torch fp32 on ONNX Runtime's CUDA execution provider."""
    from xretrieve.core.devices import ort_cuda_available as cuda_usable

    if not cuda_usable():
        pytest.skip("ONNX Runtime's CUDA execution provider is not usable here")
    checkpoint = make_tiny_checkpoint(
        tmp_path / "large", "xlm-roberta", hidden=1024, layers=24, heads=16,
        intermediate=4096, max_length=512,
    )  # fmt: skip
    manifest = export_checkpoint(checkpoint, tmp_path / "out", ExportConfig(dtype="fp16"))
    fusion = manifest.fusion
    assert (fusion["Attention"], fusion["SkipLayerNormalization"], fusion["BiasGelu"]) == (
        24,
        48,
        24,
    )
    assert manifest.validation.provider == "CUDAExecutionProvider"
    assert manifest.validation.mean_cosine >= 0.999
    assert max(manifest.validation.lengths) == 512
    report = validate_export(tmp_path / "out", checkpoint, device="cuda")
    assert report.figures.provider == "CUDAExecutionProvider" and report.ok
