"""Streaming a text file into a .npy: line counting and UTF-8 checks with line numbers, line
endings, chunked streaming equal to in-memory encoding, atomic output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import SAMPLE_SENTENCES

from xretrieve.core.errors import InputError
from xretrieve.encoding import streaming
from xretrieve.encoding.encoder import SentenceEncoder
from xretrieve.encoding.streaming import count_lines, embed_file, read_line_windows
from xretrieve.encoding.tokenize import TextTokenizer
from xretrieve.encoding.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def encoder(tiny_xlmr_checkpoint: Path) -> SentenceEncoder:
    backend = TorchBackend(tiny_xlmr_checkpoint, layers=(-1,), pooling="mean", normalize=True)
    tokenizer = TextTokenizer.from_directory(tiny_xlmr_checkpoint)
    return SentenceEncoder(backend, tokenizer, name="tiny", layers=(2,), batch_tokens=512, window=5)


@pytest.mark.parametrize(
    ("content", "lines"),
    [(b"", 0), (b"\n", 1), (b"a", 1), (b"a\n", 1), (b"a\n\nb", 3), (b"a\r\nb\r\n", 2)],
)
def test_count_lines(tmp_path: Path, content: bytes, lines: int) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    assert count_lines(path) == lines
    assert sum(len(window) for window in read_line_windows(path, 2)) == lines


def test_invalid_utf8_names_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.txt"
    # A multi-byte character across the reading blocks must not be mistaken for bad UTF-8.
    monkeypatch.setattr(streaming, "_BLOCK_BYTES", 3)
    path.write_bytes("größer\n".encode() * 3 + b"ok\nbad \xff here\nfine\n")
    with pytest.raises(InputError, match=r"bad\.txt:5: invalid UTF-8") as caught:
        count_lines(path)
    assert caught.value.line == 5


def test_line_endings_and_byte_order_mark_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffone\r\ntwo\n\nthree".encode())
    assert list(read_line_windows(path, 10)) == [["one", "two", "", "three"]]


def test_embed_file_streams_in_windows_and_matches_encode(
    tmp_path: Path, encoder: SentenceEncoder
) -> None:
    texts = [text.replace("\n", " ") for text in SAMPLE_SENTENCES * 3]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "sub" / "emb.npy"
    result = embed_file(encoder, path, out)
    assert result.shape == (len(texts), 32) and result.stats.sentences == len(texts)
    saved = np.load(out)
    assert saved.dtype == np.float32
    one_shot = SentenceEncoder(
        encoder.backend, encoder.tokenizer, name="x", layers=(2,), window=10_000
    ).encode(texts)
    np.testing.assert_allclose(saved, one_shot, atol=1e-5)
    assert [p.name for p in out.parent.iterdir()] == ["emb.npy"]  # no temp file left


def test_embed_file_of_an_empty_file(tmp_path: Path, encoder: SentenceEncoder) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    out = tmp_path / "emb.npy"
    assert embed_file(encoder, path, out).shape == (0, 32)
    assert np.load(out).shape == (0, 32)


def test_failed_embedding_leaves_no_output(tmp_path: Path, encoder: SentenceEncoder) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\xc3(\n")
    out = tmp_path / "emb.npy"
    out.write_bytes(b"previous")
    with pytest.raises(InputError, match=":2: invalid UTF-8"):
        embed_file(encoder, path, out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "emb.npy"]


def test_missing_input_is_an_input_error(tmp_path: Path, encoder: SentenceEncoder) -> None:
    with pytest.raises(InputError, match="cannot read"):
        embed_file(encoder, tmp_path / "nope.txt", tmp_path / "emb.npy")


def test_the_memory_mapped_output_is_allocated_before_it_is_written(tmp_path: Path) -> None:
    # A sparse file would only run out of space on a write through the map (SIGBUS).
    path = tmp_path / "out.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(4096, 64))
    streaming._reserve_blocks(path)
    assert path.stat().st_blocks * 512 >= path.stat().st_size
    del out
