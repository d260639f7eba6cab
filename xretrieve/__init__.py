"""xretrieve: export, embed, mine bitext and evaluate multilingual sentence encoders.

The Python API (names load lazily, so ``import xretrieve`` and ``xretrieve --help`` stay cheap):

- ``load_encoder(model="default", ...)`` -> an encoder whose ``encode(texts)`` returns
  ``(n, dim)`` float32 L2-normalised rows (``xretrieve.encoding.load``)
- ``mine(src_texts, tgt_texts, model="default", k=4, margin="ratio", mode="max",
  threshold=None) -> MinedPairs`` and ``mine_embeddings(src_emb, tgt_emb, ...)``
  (``xretrieve.mining.api``)
- ``evaluate_bucc(data_dir, langs, ...) -> {lang: BuccResult}`` and
  ``evaluate_tatoeba(data_dir, langs, ...) -> {lang: TatoebaResult}`` (``xretrieve.evaluation.retrieval``)
- ``MinedPairs``, ``Margin``, ``Mode``, ``MiningConfig`` (``xretrieve.mining.margin``), ``BuccResult``,
  ``TatoebaResult``
- the errors (``xretrieve.core.errors``): ``XRetrieveError``, the base of every error raised on
  purpose, and its subclasses ``ArgumentError`` (a bad argument, named), ``InputError`` (a bad
  file, named with its line) and ``MissingDependencyError`` (an optional package to install)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "xretrieve.encoding.load",
    "mine": "xretrieve.mining.api",
    "mine_embeddings": "xretrieve.mining.api",
    "evaluate_bucc": "xretrieve.evaluation.retrieval",
    "evaluate_tatoeba": "xretrieve.evaluation.retrieval",
    "MinedPairs": "xretrieve.mining.margin",
    "Margin": "xretrieve.mining.margin",
    "Mode": "xretrieve.mining.margin",
    "MiningConfig": "xretrieve.mining.margin",
    "BuccResult": "xretrieve.evaluation.bucc",
    "TatoebaResult": "xretrieve.evaluation.tatoeba",
    "XRetrieveError": "xretrieve.core.errors",
    "ArgumentError": "xretrieve.core.errors",
    "InputError": "xretrieve.core.errors",
    "MissingDependencyError": "xretrieve.core.errors",
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
    from xretrieve.core.errors import (
        ArgumentError,
        InputError,
        MissingDependencyError,
        XRetrieveError,
    )
    from xretrieve.encoding.load import load_encoder
    from xretrieve.evaluation.retrieval import evaluate_bucc, evaluate_tatoeba
    from xretrieve.evaluation.tatoeba import TatoebaResult
    from xretrieve.mining.api import mine, mine_embeddings
    from xretrieve.mining.gold import BuccResult
    from xretrieve.mining.margin import Margin, MinedPairs, MiningConfig, Mode


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xretrieve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
