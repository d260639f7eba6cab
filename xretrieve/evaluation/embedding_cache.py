"""Embeddings of one model at several layers, cached on disk: each distinct text is encoded
once, in one forward pass that yields all layers, and never again on a later run.

``LayerEmbeddingCache.source(layer)`` is an ``EmbeddingSource`` (``embed(corpus, progress)``),
the protocol every command embeds through, so evaluation scores exactly what ``xretrieve bucc``
and ``xretrieve tatoeba`` would score from the same encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.evaluation.store import EmbeddingStore, text_key
from xretrieve.formats import Corpus

if TYPE_CHECKING:
    from xretrieve.encoding.encoder import Encoder

logger = logging.getLogger(__name__)

# Texts encoded per call: each call's vectors become one shard, so an interrupted run keeps
# everything up to the last finished chunk, and memory stays bounded.
DEFAULT_CHUNK = 65536


class LayerEmbeddingCache:
    """Vectors of ``encoder`` for ``layers`` under ``root / model_id / layer{L}``.

    ``layers`` label the encoder's outputs: ``encode_layers`` returns ``(n, len(layers), dim)``
    in this order (a single layer uses ``encode``). ``model_id`` must change whenever the vectors
    would (weights, pooling, normalisation, text prefix, dtype, projection head).

    ``encoded_texts`` and ``forward_calls`` count the work done by this object (for reports and
    tests)."""

    def __init__(
        self,
        root: Path | str,
        model_id: str,
        encoder: Encoder,
        layers: Sequence[int],
        *,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.layers = tuple(int(layer) for layer in layers)
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise XRetrieveError(f"need distinct layers, got {self.layers}")
        self.directory = Path(root) / model_id
        self.encoder = encoder
        self.chunk = chunk
        self.stores = {
            layer: EmbeddingStore(self.directory / f"layer{layer}") for layer in self.layers
        }
        self.encoded_texts = 0
        self.forward_calls = 0

    def ensure(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> int:
        """Encode the distinct ``texts`` missing from any layer's store; returns how many."""
        keys = [text_key(text) for text in texts]
        wanted: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in wanted and any(key not in store for store in self.stores.values()):
                wanted[key] = text
        if not wanted:
            return 0
        missing_keys = list(wanted)
        missing_texts = [wanted[key] for key in missing_keys]
        for start in range(0, len(missing_texts), self.chunk):
            stop = start + self.chunk
            vectors = self._encode(missing_texts[start:stop], progress)
            for position, layer in enumerate(self.layers):
                self.stores[layer].add(missing_keys[start:stop], vectors[:, position])
        logger.info("encoded %d new texts for %s", len(missing_texts), self.directory.name)
        return len(missing_texts)

    def _encode(self, texts: list[str], progress: ProgressCallback | None) -> np.ndarray:
        self.forward_calls += 1
        self.encoded_texts += len(texts)
        if len(self.layers) == 1:
            vectors = self.encoder.encode(texts, progress)[:, None, :]
        else:
            vectors = self.encoder.encode_layers(texts, progress)
        if vectors.shape[:2] != (len(texts), len(self.layers)):
            raise XRetrieveError(
                f"encoder {self.encoder.name} returned shape {vectors.shape} for {len(texts)} "
                f"texts and layers {self.layers}"
            )
        return vectors

    def embed(
        self, texts: Sequence[str], layer: int, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows of ``layer`` aligned with ``texts``."""
        if layer not in self.stores:
            raise XRetrieveError(f"layer {layer} is not among the cached layers {self.layers}")
        self.ensure(texts, progress)
        return self.stores[layer].get([text_key(text) for text in texts])

    def source(self, layer: int) -> CachedSource:
        """An ``EmbeddingSource`` serving ``layer`` from this cache."""
        return CachedSource(self, layer)


@dataclass(frozen=True)
class CachedSource:
    """``EmbeddingSource`` over one layer of a ``LayerEmbeddingCache``."""

    cache: LayerEmbeddingCache
    layer: int

    def embed(self, corpus: Corpus, progress: ProgressCallback | None = None) -> np.ndarray:
        """``(len(corpus), dim)`` float32 rows aligned with ``corpus.texts``."""
        return self.cache.embed(corpus.texts, self.layer, progress)
