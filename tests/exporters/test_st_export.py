"""exporters/: sentence-transformers folders exported whole (pooling, Dense layers, Normalize,
prompts), compared with sentence-transformers' own ``SentenceTransformer(folder).encode``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from st_models import (
    REFERENCE_PROMPT,
    ST_CASES,
    ST_SENTENCES,
    st_encode,
    write_legacy_format,
)

from exporters import ExportConfig, export_checkpoint, read_manifest
from xretrieve.core.errors import XRetrieveError

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _export(folder: Path, out: Path, dtype: str = "fp32", **settings) -> Path:
    normalize = ST_CASES.get(folder.name, {}).get("normalize", False)
    config = ExportConfig(dtype=dtype, normalize=settings.pop("normalize", normalize), **settings)
    export_checkpoint(folder, out, config)
    return out


def _onnx_embeddings(export_dir: Path) -> np.ndarray:
    from xretrieve import load_encoder

    encoder = load_encoder(export_dir, device="cpu", backend="ort")
    return encoder.encode(ST_SENTENCES)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", sorted(ST_CASES))
def test_fp32_export_matches_sentence_transformers(name, st_folder, tmp_path) -> None:
    folder = st_folder(name)
    reference = st_encode(folder, prompt_name=REFERENCE_PROMPT.get(name))
    export_dir = _export(folder, tmp_path / "export")
    embeddings = _onnx_embeddings(export_dir)
    assert embeddings.shape == reference.shape
    np.testing.assert_allclose(embeddings, reference, atol=1e-5, rtol=0)
    manifest = read_manifest(export_dir)
    case = ST_CASES[name]
    pipeline = manifest.sentence_transformers
    assert manifest.format_version == 2 and manifest.pooling.value == case["pooling"]
    assert pipeline["pooling"] == case["pooling"] and pipeline["normalize"] == case.get(
        "normalize", False
    )
    assert pipeline["modules"][:2] == ["Transformer", "Pooling"]
    assert [layer["activation"] for layer in pipeline["dense"]] == [
        activation for _, activation in case.get("dense", ())
    ]
    assert manifest.dim == reference.shape[1] and manifest.max_length == 48
    assert (pipeline["prompt_tokens"] > 0) == (case.get("include_prompt", True) is False)
    assert manifest.text_prefix == case.get("prompts", {}).get(REFERENCE_PROMPT.get(name), "")
    assert manifest.validation.max_abs_diff < 1e-5


@pytest.mark.parametrize("name", sorted(ST_CASES))
def test_fp16_export_keeps_the_mean_cosine(name, st_folder, tmp_path) -> None:
    # ONNX Runtime runs the fp16 graph on the CPU execution provider too (test_export.py).
    folder = st_folder(name)
    reference = st_encode(folder, prompt_name=REFERENCE_PROMPT.get(name))
    export_dir = _export(folder, tmp_path / "export", dtype="fp16")
    embeddings = _onnx_embeddings(export_dir)
    assert _cosines(embeddings, reference).mean() >= 0.999
    assert read_manifest(export_dir).validation.mean_cosine >= 0.999


@pytest.mark.parametrize("subfolder", [False, True])
def test_hub_format_folders_of_older_versions(subfolder, st_folder, tmp_path) -> None:
    """The folders on the hub were written by sentence-transformers 2 and 3 (``pooling_mode_*``
    flags, ``sentence_transformers.models.X`` types, the oldest with the transformer in
    ``0_Transformer``); sentence-transformers 6 reads them, and so must the exporter."""
    folder = shutil.copytree(st_folder("labse"), tmp_path / "labse")
    write_legacy_format(folder, transformer_subfolder=subfolder)
    reference = st_encode(folder)
    np.testing.assert_allclose(reference, st_encode(st_folder("labse")), atol=1e-6)
    export_dir = _export(folder, tmp_path / "export", normalize=True)
    np.testing.assert_allclose(_onnx_embeddings(export_dir), reference, atol=1e-5, rtol=0)
    assert read_manifest(export_dir).sentence_transformers["transformer_path"] == (
        "0_Transformer" if subfolder else ""
    )


def test_settings_that_would_break_the_pipeline_are_refused(st_folder, tmp_path) -> None:
    folder = st_folder("labse")
    refused = [
        (ExportConfig(pooling="mean"), "contradicts the sentence-transformers pipeline"),
        (ExportConfig(normalize=False), "ends in Normalize"),
        (ExportConfig(layers=(1,)), "Dense layers were trained on the last hidden state"),
        (ExportConfig(layers=(-1, 1)), "Dense layers were trained on the last hidden state"),
        (ExportConfig(projection=True), "brings its own pipeline"),
    ]
    for config, message in refused:
        with pytest.raises(XRetrieveError, match=message):
            export_checkpoint(folder, tmp_path / "out", config)
        assert not (tmp_path / "out").exists()
    # Without Dense layers, earlier layers pool as for any checkpoint.
    export_dir = _export(st_folder("xlmr-mean"), tmp_path / "layers", layers=(1, -1))
    assert read_manifest(export_dir).layers == (1, 2)


def test_legacy_multi_mode_and_mode_flags(st_folder, tmp_path) -> None:
    folder = shutil.copytree(st_folder("xlmr-mean"), tmp_path / "st")
    write_legacy_format(folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config["pooling_mode_cls_token"] = True
    pooling.write_text(json.dumps(config))
    with pytest.raises(XRetrieveError, match="pooling modes cls, mean together"):
        export_checkpoint(folder, tmp_path / "out", ExportConfig(dtype="fp32"))


def test_do_lower_case_of_an_older_folder(st_folder, tmp_path) -> None:
    """sentence-transformers before 6 kept ``do_lower_case`` in ``sentence_bert_config.json``
    (6 writes it into the tokenizer): the export lower-cases, and so does its directory alone."""
    from xretrieve.encoding.tokenize import TextTokenizer

    folder = shutil.copytree(st_folder("xlmr-mean"), tmp_path / "st")
    write_legacy_format(folder, do_lower_case=True)
    cased = TextTokenizer.from_directory(folder)
    assert cased.tokenize(["THE RED HOUSE"]).ids != cased.tokenize(["the red house"]).ids
    reference = st_encode(folder)
    assert np.abs(reference - st_encode(st_folder("xlmr-mean"))).max() > 1e-3
    export_dir = _export(folder, tmp_path / "export")
    np.testing.assert_allclose(_onnx_embeddings(export_dir), reference, atol=1e-5, rtol=0)
    tokenizer = TextTokenizer.from_directory(export_dir)
    assert tokenizer.tokenize(["THE RED HOUSE"]).ids == tokenizer.tokenize(["the red house"]).ids
