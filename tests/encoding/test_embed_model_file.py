"""``embed_model_file``: what ``xretrieve embed`` runs in one process. Its checks come before
the model load, ``on_loaded`` sees the encoder before any row is written, and ``to_json`` is
the summary ``embed --json`` prints, key for key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.encoding.streaming import OutputDtype, embed_model_file

SUMMARY_KEYS = [
    "model", "provider", "backend", "input", "output", "shape", "dtype", "sentences", "dim",
    "layers", "truncated", "max_length", "seconds", "sentences_per_s", "tokens_per_s",
    "padding_efficiency", "batch_tokens", "batches", "oom_splits",
]  # fmt: skip


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path_factory.getbasetemp() / "cli-embed-cache"))


def test_embeds_and_summarises(tiny_xlmr_checkpoint: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("the cat\n\nle chat\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    seen = []
    result = embed_model_file(
        str(tiny_xlmr_checkpoint),
        source,
        out,
        device="cpu",
        batch_tokens=64,
        out_dtype=OutputDtype.FP16,
        on_loaded=lambda encoder: seen.append((encoder.provider, out.exists())),
    )
    assert seen == [("CPUExecutionProvider", False)]
    summary = result.to_json()
    assert list(summary) == SUMMARY_KEYS
    assert summary["input"] == str(source) and summary["output"] == str(out)
    assert summary["shape"] == [3, 32] and summary["dtype"] == "fp16"
    assert summary["backend"] == "ort" and summary["batch_tokens"] == 64
    assert summary["layers"] == list(result.layers) and summary["sentences"] == 3
    rows = np.load(out)
    assert rows.dtype == np.float16 and rows.shape == (3, 32)


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("missing input", InputError, "cannot read"),
        ("output in the model folder", InputError, "lies inside the input directory"),
        ("bad device", XRetrieveError, "unknown device"),
    ],
)
def test_checks_come_before_the_model_load(
    tiny_xlmr_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    error: type,
    message: str,
) -> None:
    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr("xretrieve.encoding.load.load_encoder", no_load)
    source = tmp_path / "in.txt"
    source.write_text("x\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    device = "cpu"
    if case == "missing input":
        source = tmp_path / "missing.txt"
    elif case == "output in the model folder":
        out = tiny_xlmr_checkpoint / "emb.npy"
    else:
        device = "tpu"
    with pytest.raises(error, match=message):
        embed_model_file(str(tiny_xlmr_checkpoint), source, out, device=device)
    assert not out.exists()
