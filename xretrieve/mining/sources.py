"""The one way commands obtain embeddings for a ``Corpus``: an ``EmbeddingSource``.

``EncoderSource`` encodes with a model; ``DirectorySource`` reads precomputed ``.npy`` files from
a directory mirroring the data directory. Both return one float32 row per corpus line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.formats import Corpus, distinct_texts, embedding_path, read_embeddings


class EmbeddingSource(Protocol):
    """Anything that turns a corpus into embeddings: ``(len(corpus), d)`` float32, row i for
    ``corpus.texts[i]``."""

    def embed(self, corpus: Corpus, progress: ProgressCallback | None = None) -> np.ndarray: ...


class TextEncoder(Protocol):
    """The part of ``xretrieve.encoding.Encoder`` an ``EncoderSource`` uses."""

    name: str
    dim: int

    def encode(
        self, texts: Sequence[str], progress: ProgressCallback | None = None
    ) -> np.ndarray: ...


class EncoderSource:
    """Encodes each distinct text of a corpus once and expands back to one row per line."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    def embed(self, corpus: Corpus, progress: ProgressCallback | None = None) -> np.ndarray:
        def encode(texts: list[str]) -> np.ndarray:
            distinct = np.asarray(self.encoder.encode(texts, progress), dtype=np.float32)
            if distinct.shape != (len(texts), self.encoder.dim):
                raise XRetrieveError(
                    f"encoder {self.encoder.name!r} returned shape {distinct.shape} for "
                    f"{len(texts)} texts, expected ({len(texts)}, {self.encoder.dim})"
                )
            return distinct

        return encode_distinct(corpus.texts, encode)


def encode_distinct(texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """``encode`` called once, on the distinct texts in first-occurrence order; its rows
    (first axis; ``(n, d)`` or ``(n, layers, d)``) expanded back to one per item of ``texts``.
    Real corpora (BUCC) repeat sentences, so this encodes each once."""
    first_rows, inverse = distinct_texts(texts)
    return encode([texts[row] for row in first_rows.tolist()])[inverse]


class DirectorySource:
    """Reads ``EMB/<path of the data file relative to DIR>.npy`` (see ``embedding_path``) and
    checks its row count against the corpus and, when given, its dimension against ``dim``."""

    def __init__(self, emb_dir: Path | str, data_dir: Path | str, dim: int | None = None) -> None:
        self.emb_dir = Path(emb_dir)
        self.data_dir = Path(data_dir)
        self.dim = dim

    def embed(self, corpus: Corpus, progress: ProgressCallback | None = None) -> np.ndarray:
        path = embedding_path(self.emb_dir, self.data_dir, corpus.path)
        matrix = read_embeddings(path, rows=len(corpus), dim=self.dim)
        if progress is not None:
            progress(f"embeddings {path.name}", len(corpus), len(corpus))
        return matrix


def embed_pair(
    source: EmbeddingSource,
    src: Corpus,
    tgt: Corpus,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed both sides of a pair; raises ``InputError`` naming the target's embeddings file
    (or data file) when the two dimensions differ."""
    src_emb = source.embed(src, progress)
    tgt_emb = source.embed(tgt, progress)
    if src_emb.shape[1] != tgt_emb.shape[1]:
        where = (
            embedding_path(source.emb_dir, source.data_dir, tgt.path)
            if isinstance(source, DirectorySource)
            else tgt.path
        )
        raise InputError(
            where,
            f"embedding dimension {tgt_emb.shape[1]} differs from the source's {src_emb.shape[1]}",
        )
    return src_emb, tgt_emb


def embedding_source(
    model: str | Path | TextEncoder | None,
    emb_dir: Path | None,
    data_dir: Path | None,
    *,
    text_prefix: str | None = None,
    prompt: str | None = None,
    progress: ProgressCallback | None = None,
) -> EncoderSource | DirectorySource:
    """The ``EmbeddingSource`` of the ``model`` / ``emb_dir`` choice: ``DirectorySource``
    for ``emb_dir`` (mirroring ``data_dir``), else an ``EncoderSource`` of ``model`` (a loaded
    encoder, or a name for ``xretrieve.encoding.load_encoder``; None is the default model).
    ``progress`` sees the first-use conversion and export of a model."""
    if emb_dir is not None:
        if model is not None:
            raise ArgumentError.from_template("give either {model} or {emb_dir}, not both")
        if text_prefix is not None or prompt is not None:
            raise ArgumentError.from_template(
                "{text_prefix} and {prompt} apply to {model}, not to {emb_dir} embeddings"
            )
        if data_dir is None:
            raise ArgumentError.from_template(
                "{emb_dir} mirrors a data directory: give {data_dir} too"
            )
        return DirectorySource(emb_dir, data_dir)
    return EncoderSource(
        resolve_encoder(model, text_prefix=text_prefix, prompt=prompt, progress=progress)
    )


def resolve_encoder(
    model: str | Path | TextEncoder | None,
    *,
    text_prefix: str | None = None,
    prompt: str | None = None,
    progress: ProgressCallback | None = None,
) -> TextEncoder:
    """``model`` itself when it is an encoder object (has ``encode``), else
    ``xretrieve.encoding.load_encoder(model, text_prefix=..., prompt=..., progress=...)``."""
    if model is not None and not isinstance(model, str | Path):
        if text_prefix is not None or prompt is not None:
            raise XRetrieveError(
                "text_prefix and prompt apply to a model name, not to a loaded encoder"
            )
        return model  # type: ignore[return-value]
    from xretrieve.encoding import load_encoder

    return load_encoder(model, text_prefix=text_prefix, prompt=prompt, progress=progress)
