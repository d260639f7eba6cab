"""encoding/load.py with sentence-transformers folders: ``load_encoder``, ``embed`` and hub ids
run the folder's whole pipeline (compared with ``SentenceTransformer(folder).encode``), the
export cache tells folders apart by their module folders, and ``prompt`` picks a prompt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from st_models import REFERENCE_PROMPT, ST_SENTENCES, st_encode
from typer.testing import CliRunner

from exporters import ExportConfig, export_checkpoint
from exporters.model_settings import E5_PROMPTS, model_prompts, read_model_settings
from xretrieve import load_encoder
from xretrieve.cli.app import app
from xretrieve.core.errors import ArgumentError, XRetrieveError

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _reference(folder: Path, name: str, prompt_name: str | None = None) -> np.ndarray:
    """sentence-transformers' vectors, L2-normalised as xretrieve's checkpoints always are."""
    return st_encode(
        folder, prompt_name=prompt_name or REFERENCE_PROMPT.get(name), normalize_embeddings=True
    )


@pytest.mark.parametrize("backend", ["ort", "torch"])
@pytest.mark.parametrize("name", ["labse", "lasttoken", "cls-prompt-excluded"])
def test_load_encoder_runs_the_whole_pipeline(name, backend, st_folder, isolated) -> None:
    folder = st_folder(name)
    encoder = load_encoder(folder, backend=backend, device="cpu", dtype="fp32")
    np.testing.assert_allclose(
        encoder.encode(ST_SENTENCES), _reference(folder, name), atol=1e-5, rtol=0
    )


def test_changed_dense_weights_are_exported_again(st_folder, isolated) -> None:
    """The cached export is keyed by the folder's content, its module folders included: new
    Dense weights in ``2_Dense`` must not reuse the export of the old ones."""
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(st_folder("labse"), isolated / "labse")
    before = load_encoder(folder, device="cpu").encode(ST_SENTENCES)
    weights = folder / "2_Dense" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["linear.weight"] = tensors["linear.weight"].flip(0).contiguous()
    save_file(tensors, str(weights))
    after = load_encoder(folder, device="cpu").encode(ST_SENTENCES)
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, _reference(folder, "labse"), atol=1e-5, rtol=0)


def test_hub_id_goes_through_the_hub_cache(st_folder, isolated) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = isolated / "hub" / "models--tiny-org--tiny-labse"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    shutil.copytree(st_folder("labse"), repo / "snapshots" / revision)
    texts = isolated / "texts.txt"
    texts.write_text("\n".join(ST_SENTENCES) + "\n", encoding="utf-8")
    out = isolated / "emb.npy"
    result = runner.invoke(
        app, ["embed", "tiny-org/tiny-labse", str(texts), "--out", str(out), "--device", "cpu",
              "--dtype", "fp32", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(
        np.load(out), _reference(st_folder("labse"), "labse"), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_prompt_picks_another_prompt(backend, st_folder, isolated) -> None:
    folder = st_folder("prompt-excluded")
    encoder = load_encoder(folder, backend=backend, device="cpu", dtype="fp32", prompt="passage")
    reference = _reference(folder, "prompt-excluded", "passage")
    np.testing.assert_allclose(encoder.encode(ST_SENTENCES), reference, atol=1e-5, rtol=0)
    default = load_encoder(folder, backend=backend, device="cpu", dtype="fp32")
    assert np.abs(default.encode(ST_SENTENCES) - reference).max() > 1e-3


def test_cli_embed_and_mine_take_a_prompt(st_folder, isolated) -> None:
    folder = st_folder("prompt-excluded")
    texts = isolated / "texts.txt"
    texts.write_text("\n".join(ST_SENTENCES) + "\n", encoding="utf-8")
    out = isolated / "emb.npy"
    result = runner.invoke(
        app, ["embed", str(folder), str(texts), "--out", str(out), "--device", "cpu",
              "--dtype", "fp32", "--prompt", "passage", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reference = _reference(folder, "prompt-excluded", "passage")
    np.testing.assert_allclose(np.load(out), reference, atol=1e-5, rtol=0)
    result = runner.invoke(
        app, ["mine", "--model", str(folder), "--src-file", str(texts), "--tgt-file", str(texts),
              "--prompt", "nope", "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --prompt {folder.name} has no prompt 'nope' (its prompts are document, "
        "passage, query)"
    )


def test_prompt_errors_name_the_argument(st_folder, tiny_xlmr_checkpoint, isolated) -> None:
    folder = st_folder("prompt-excluded")
    with pytest.raises(ArgumentError, match="has no prompt 'nope' \\(its prompts are"):
        load_encoder(folder, device="cpu", prompt="nope")
    with pytest.raises(ArgumentError, match="give either prompt or text_prefix, not both"):
        load_encoder(folder, device="cpu", prompt="query", text_prefix="query: ")
    with pytest.raises(ArgumentError, match="names none: give text_prefix instead"):
        load_encoder(tiny_xlmr_checkpoint, device="cpu", prompt="query")
    with pytest.raises(ArgumentError, match="prompt must be a str or None"):
        load_encoder(folder, device="cpu", prompt=3)


def test_an_export_keeps_its_prompt(st_folder, isolated) -> None:
    folder = st_folder("prompt-excluded")
    export_dir = isolated / "export"
    export_checkpoint(folder, export_dir, ExportConfig(dtype="fp32"))
    encoder = load_encoder(export_dir, device="cpu", prompt="query")
    np.testing.assert_allclose(
        encoder.encode(ST_SENTENCES), _reference(folder, "prompt-excluded"), atol=1e-5, rtol=0
    )
    with pytest.raises(XRetrieveError, match="text prefix 'passage: ' \\(it has 'query: '\\)"):
        load_encoder(export_dir, device="cpu", prompt="passage")


def test_e5_hub_snapshots_have_its_prompts(tmp_path) -> None:
    snapshot = tmp_path / "models--intfloat--multilingual-e5-base" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "modules.json").write_text(json.dumps([]), encoding="utf-8")
    assert model_prompts(snapshot) == E5_PROMPTS
    assert read_model_settings(snapshot).text_prefix == "query: "
    other = tmp_path / "models--org--other" / "snapshots" / "abc"
    other.mkdir(parents=True)
    assert model_prompts(other) == {} and read_model_settings(other).text_prefix == ""
