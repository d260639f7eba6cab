"""Sentence embeddings: token-budget batching, ONNX Runtime and torch backends, streaming files.

- ``load_encoder(model, *, backend, device, batch_tokens, layers, ...) -> SentenceEncoder``
  (``xretrieve.encoding.load``)
- ``Encoder`` (the protocol), ``SentenceEncoder``, ``EncodeStats`` (``xretrieve.encoding.encoder``)
- ``embed_file(encoder, input_path, output_path) -> EmbedFileResult`` (``.streaming``)
- ``plan_batches``, ``restore_order`` (``.batching``); ``TextTokenizer`` (``.tokenize``)
- ``Backend``, ``Device``, ``SourceKind`` (the settings' enums, ``.settings``)

Names load lazily so that importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "load_encoder": "xretrieve.encoding.load",
    "resolve_device": "xretrieve.encoding.load",
    "Encoder": "xretrieve.encoding.encoder",
    "SentenceEncoder": "xretrieve.encoding.encoder",
    "EncodeStats": "xretrieve.encoding.encoder",
    "embed_file": "xretrieve.encoding.streaming",
    "EmbedFileResult": "xretrieve.encoding.streaming",
    "plan_batches": "xretrieve.encoding.batching",
    "restore_order": "xretrieve.encoding.batching",
    "TextTokenizer": "xretrieve.encoding.tokenize",
    "Backend": "xretrieve.core.settings",
    "Device": "xretrieve.core.settings",
    "SourceKind": "xretrieve.core.settings",
}

__all__ = [
    "Backend",
    "Device",
    "EmbedFileResult",
    "EncodeStats",
    "Encoder",
    "SentenceEncoder",
    "SourceKind",
    "TextTokenizer",
    "embed_file",
    "load_encoder",
    "plan_batches",
    "resolve_device",
    "restore_order",
]

if TYPE_CHECKING:
    from xretrieve.core.settings import Backend, Device, SourceKind
    from xretrieve.encoding.batching import plan_batches, restore_order
    from xretrieve.encoding.encoder import Encoder, EncodeStats, SentenceEncoder
    from xretrieve.encoding.load import load_encoder, resolve_device
    from xretrieve.encoding.streaming import EmbedFileResult, embed_file
    from xretrieve.encoding.tokenize import TextTokenizer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xretrieve.encoding' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
