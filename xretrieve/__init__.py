"""xretrieve: export, embed, mine bitext and evaluate multilingual sentence encoders.

The Python API (names load lazily, so ``import xretrieve`` and ``xretrieve --help`` stay cheap):

- ``load_encoder(model="default", ...)`` -> an encoder whose ``encode(texts)`` returns
  ``(n, dim)`` float32 L2-normalised rows (``xretrieve.encoding.load``)
- ``mine(src_texts, tgt_texts, model="default", k=4, margin="ratio", mode="max",
  threshold=None) -> MinedPairs`` and ``mine_embeddings(src_emb, tgt_emb, ...)``
  (``xretrieve.mining``)
- ``evaluate_bucc(data_dir, langs, ...) -> {lang: BuccResult}`` and
  ``evaluate_tatoeba(data_dir, langs, ...) -> {lang: TatoebaResult}`` (``xretrieve.retrieval``)
- ``MinedPairs``, ``Margin``, ``Mode``, ``MiningConfig`` (``xretrieve.margin``), ``BuccResult``,
  ``TatoebaResult``
- the errors (``xretrieve.errors``): ``XRetrieveError``, the base of every error raised on
  purpose, and its subclasses ``ArgumentError`` (a bad argument, named), ``InputError`` (a bad
  file, named with its line) and ``MissingDependencyError`` (an optional package to install)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "xretrieve.encoding.load",
    "mine": "xretrieve.mining",
    "mine_embeddings": "xretrieve.mining",
    "evaluate_bucc": "xretrieve.retrieval",
    "evaluate_tatoeba": "xretrieve.retrieval",
    "MinedPairs": "xretrieve.margin",
    "Margin": "xretrieve.margin",
    "Mode": "xretrieve.margin",
    "MiningConfig": "xretrieve.margin",
    "BuccResult": "xretrieve.bucc",
    "TatoebaResult": "xretrieve.tatoeba",
    "XRetrieveError": "xretrieve.errors",
    "ArgumentError": "xretrieve.errors",
    "InputError": "xretrieve.errors",
    "MissingDependencyError": "xretrieve.errors",
}

__all__ = [
    "ArgumentError",
    "BuccResult",
    "InputError",
    "Margin",
    "MinedPairs",
    "MiningConfig",
    "MissingDependencyError",
    "Mode",
    "TatoebaResult",
    "XRetrieveError",
    "evaluate_bucc",
    "evaluate_tatoeba",
    "load_encoder",
    "mine",
    "mine_embeddings",
]

if TYPE_CHECKING:
    from xretrieve.bucc import BuccResult
    from xretrieve.encoding.load import load_encoder
    from xretrieve.errors import (
        ArgumentError,
        InputError,
        MissingDependencyError,
        XRetrieveError,
    )
    from xretrieve.margin import Margin, MinedPairs, MiningConfig, Mode
    from xretrieve.mining import mine, mine_embeddings
    from xretrieve.retrieval import evaluate_bucc, evaluate_tatoeba
    from xretrieve.tatoeba import TatoebaResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xretrieve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
