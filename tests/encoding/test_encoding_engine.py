"""The embedding loop on the torch backend (CPU): order restoration after length sorting,
windowed streaming equal to one shot, empty and over-long lines, out-of-memory halving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import SAMPLE_SENTENCES

from xretrieve.core.errors import XRetrieveError
from xretrieve.encoding.encoder import SentenceEncoder
from xretrieve.encoding.tokenize import TextTokenizer
from xretrieve.encoding.torch_backend import TorchBackend

# Lengths from 2 to ~150 tokens in shuffled order, so sorting really permutes the rows.
_RNG = np.random.default_rng(0)
TEXTS = [
    " ".join(_RNG.choice(["the", "cat", "Hund", "maison", "город", "我们", "a", "xyzzy"], size=n))
    for n in _RNG.integers(0, 60, size=57)
] + SAMPLE_SENTENCES


@pytest.fixture(scope="module")
def torch_parts(tiny_xlmr_checkpoint: Path) -> tuple[TorchBackend, TextTokenizer]:
    backend = TorchBackend(tiny_xlmr_checkpoint, layers=(-1,), pooling="mean", normalize=True)
    tokenizer = TextTokenizer.from_directory(tiny_xlmr_checkpoint, max_length=64)
    return backend, tokenizer


def _encoder(parts, backend=None, **kwargs) -> SentenceEncoder:
    torch_backend, tokenizer = parts
    return SentenceEncoder(backend or torch_backend, tokenizer, name="tiny", layers=(2,), **kwargs)


def _one_by_one(parts, texts: list[str]) -> np.ndarray:
    backend, tokenizer = parts
    rows = []
    for text in texts:
        input_ids, attention_mask = tokenizer.pad(tokenizer.tokenize([text]).ids)
        rows.append(backend.run(input_ids, attention_mask)[0][0])
    return np.stack(rows)


def test_rows_come_back_in_input_order(torch_parts) -> None:
    encoder = _encoder(torch_parts, batch_tokens=256)
    embeddings = encoder.encode(TEXTS)
    assert embeddings.shape == (len(TEXTS), 32) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, _one_by_one(torch_parts, TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    stats = encoder.last_stats
    assert stats.sentences == len(TEXTS) and stats.batches > 5
    assert 0.5 < stats.padding_efficiency <= 1.0


def test_windowed_streaming_equals_one_shot(torch_parts) -> None:
    one_shot = _encoder(torch_parts, batch_tokens=100_000, window=10_000).encode(TEXTS)
    windowed = _encoder(torch_parts, batch_tokens=200, window=7)
    received: list[tuple[int, int]] = []
    out = np.zeros_like(one_shot)

    def sink(start: int, rows: np.ndarray) -> None:
        received.append((start, len(rows)))
        out[start : start + len(rows)] = rows

    windows = (TEXTS[i : i + 7] for i in range(0, len(TEXTS), 7))
    stats = windowed.encode_stream(windows, sink, total=len(TEXTS))
    assert received == [(i, len(TEXTS[i : i + 7])) for i in range(0, len(TEXTS), 7)]
    assert stats.sentences == len(TEXTS)
    np.testing.assert_allclose(out, one_shot, atol=1e-5)


def test_empty_lines_are_embedded_and_long_lines_truncated_and_counted(torch_parts) -> None:
    texts = ["", "the cat", "", "the " * 200, "Hund " * 100]
    encoder = _encoder(torch_parts)
    embeddings = encoder.encode(texts, progress=None)
    assert np.all(np.isfinite(embeddings))
    np.testing.assert_allclose(embeddings[0], embeddings[2])
    assert encoder.last_stats.truncated == 2 and encoder.last_stats.max_length == 64
    # Truncation keeps the first 64 tokens: "the " * 200 and "the " * 300 embed the same.
    np.testing.assert_allclose(embeddings[3], encoder.encode(["the " * 300])[0], atol=1e-5)


def test_progress_is_cumulative_and_ends_at_the_total(torch_parts) -> None:
    calls: list[tuple[str, int, int | None]] = []
    _encoder(torch_parts, batch_tokens=128).encode(TEXTS, lambda *call: calls.append(call))
    assert {stage for stage, _, _ in calls} == {"embed"}
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == len(TEXTS)
    assert all(total == len(TEXTS) for _, _, total in calls)


def test_empty_input(torch_parts) -> None:
    assert _encoder(torch_parts).encode([]).shape == (0, 32)


class FakeOutOfMemory(RuntimeError):
    pass


class OomBackend:
    """A real backend that 'runs out of memory' on batches above ``limit`` padded tokens."""

    def __init__(self, inner: TorchBackend, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.provider, self.dim, self.n_layers = "fake-gpu", inner.dim, inner.n_layers
        self.sizes: list[int] = []
        self.released = 0

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        if input_ids.size > self.limit:
            raise FakeOutOfMemory("CUDA out of memory (fake)")
        self.sizes.append(input_ids.size)
        return self.inner.run(input_ids, attention_mask)

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, FakeOutOfMemory)

    def release_memory(self) -> None:
        self.released += 1


def test_out_of_memory_halves_the_batch_and_gives_the_same_rows(torch_parts) -> None:
    reference = _encoder(torch_parts, batch_tokens=4096).encode(TEXTS)
    fake = OomBackend(torch_parts[0], limit=300)
    encoder = _encoder(torch_parts, backend=fake, batch_tokens=4096)
    embeddings = encoder.encode(TEXTS)
    np.testing.assert_allclose(embeddings, reference, atol=1e-5)
    assert max(fake.sizes) <= 300 and fake.released > 0
    assert encoder.last_stats.oom_splits > 0
    # The failing size is remembered: a second run splits up front instead of failing again.
    released = fake.released
    encoder.encode(TEXTS)
    assert fake.released == released


def test_out_of_memory_on_one_sentence_fails_clearly(torch_parts) -> None:
    encoder = _encoder(torch_parts, backend=OomBackend(torch_parts[0], limit=10))
    with pytest.raises(XRetrieveError, match="out of GPU memory on a single sentence"):
        encoder.encode(["the cat sat on the mat and the dog"] * 4)


def test_other_backend_errors_propagate_unchanged(torch_parts) -> None:
    class Broken(OomBackend):
        def run(self, input_ids, attention_mask):
            raise ValueError("boom")

    encoder = _encoder(torch_parts, backend=Broken(torch_parts[0], limit=0))
    with pytest.raises(ValueError, match="boom"):
        encoder.encode(TEXTS)


def test_errors_in_the_tokenizing_thread_reach_the_caller(torch_parts) -> None:
    def windows():
        yield TEXTS[:5]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        _encoder(torch_parts).encode_stream(windows(), lambda start, rows: None)


def test_torch_oom_type_is_recognised(torch_parts) -> None:
    import torch

    backend = torch_parts[0]
    assert backend.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not backend.is_out_of_memory(RuntimeError("shape mismatch"))


def test_multi_layer_torch_backend_gives_layer_rows(tiny_bert_checkpoint: Path) -> None:
    backend = TorchBackend(tiny_bert_checkpoint, layers=(1, -1), pooling="cls", normalize=True)
    tokenizer = TextTokenizer.from_directory(tiny_bert_checkpoint)
    encoder = SentenceEncoder(backend, tokenizer, name="bert", layers=backend.layers)
    layer_rows = encoder.encode_layers(SAMPLE_SENTENCES)
    assert layer_rows.shape == (len(SAMPLE_SENTENCES), 2, 32)
    np.testing.assert_allclose(layer_rows[:, 0], encoder.encode(SAMPLE_SENTENCES), atol=1e-6)


def test_a_bare_string_is_one_text_and_gives_one_vector(torch_parts) -> None:
    """Issue 17 item 9: ``encode("hello world")`` returned 11 vectors, one per character. As in
    sentence-transformers, a bare string is one text: one ``(dim,)`` vector."""
    encoder = _encoder(torch_parts)
    vector = encoder.encode("hello world")
    assert vector.shape == (32,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, encoder.encode(["hello world"])[0], atol=1e-6)
    layers = encoder.encode_layers("hello world")
    assert layers.shape == (1, 32)
    # Lists, tuples and other iterables of str stay (n, dim).
    assert encoder.encode(("a", "b")).shape == (2, 32)
    assert encoder.encode(text for text in ("a", "b", "c")).shape == (3, 32)
    assert encoder.encode([]).shape == (0, 32)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fine", b"bytes"], r"texts\[1\] must be a str, not bytes"),
        (["fine", None], r"texts\[1\] must be a str, not NoneType"),
        ([3], r"texts\[0\] must be a str, not int"),
        (b"bytes", "texts must be a list of str, not bytes"),
        (42, "texts must be a list of str, not int"),
    ],
)
def test_encode_names_a_bad_text(torch_parts, texts, message) -> None:
    from xretrieve.core.errors import ArgumentError

    with pytest.raises(ArgumentError, match=message):
        _encoder(torch_parts).encode(texts)
