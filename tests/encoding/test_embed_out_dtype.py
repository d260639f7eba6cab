"""``embed --out-dtype fp16``: half-size files equal to the float32 ones to fp16 rounding,
values beyond float16's range refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import SAMPLE_SENTENCES
from typer.testing import CliRunner

from xretrieve.cli.app import app
from xretrieve.core.errors import InputError
from xretrieve.encoding.encoder import SentenceEncoder
from xretrieve.encoding.streaming import OutputDtype, embed_file
from xretrieve.encoding.tokenize import TextTokenizer
from xretrieve.encoding.torch_backend import TorchBackend


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path_factory.getbasetemp() / "out-dtype-cache"))


@pytest.fixture()
def sentences(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(t.replace("\n", " ") for t in SAMPLE_SENTENCES) + "\n", "utf-8")
    return path


def test_cli_fp16_output_is_half_size_and_close(tiny_xlmr_checkpoint, sentences, tmp_path) -> None:
    outputs = {}
    for dtype in ("fp32", "fp16"):
        out = tmp_path / f"{dtype}.npy"
        result = CliRunner().invoke(
            app,
            ["embed", str(tiny_xlmr_checkpoint), str(sentences), "--out", str(out),
             "--out-dtype", dtype, "--backend", "torch", "--json", "--no-progress"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["dtype"] == dtype
        outputs[dtype] = np.load(out)
    assert outputs["fp16"].dtype == np.float16 and outputs["fp32"].dtype == np.float32
    np.testing.assert_allclose(outputs["fp16"], outputs["fp32"], atol=1e-3)


def test_values_beyond_fp16_are_refused_and_nothing_is_written(
    tiny_xlmr_checkpoint: Path, sentences: Path, tmp_path: Path
) -> None:
    backend = TorchBackend(tiny_xlmr_checkpoint, layers=(-1,), pooling="mean", normalize=False)
    tokenizer = TextTokenizer.from_directory(tiny_xlmr_checkpoint)
    encoder = SentenceEncoder(backend, tokenizer, name="tiny", layers=(2,), batch_tokens=512)
    original = backend.run

    def huge(*args, **kwargs):
        pooled, layers = original(*args, **kwargs)
        return pooled * 1e6, layers

    backend.run = huge
    out = tmp_path / "big.npy"
    with pytest.raises(InputError, match="exceed float16's range") as caught:
        embed_file(encoder, sentences, out, out_dtype=OutputDtype.FP16)
    assert caught.value.line is not None and caught.value.line >= 1
    assert list(tmp_path.iterdir()) == [sentences]
