"""Retrieval-aware training: score a saved checkpoint on Tatoeba and BUCC with the toolkit's own
export, encoding and evaluation path, so a run shows how intermediate training moves
cross-lingual retrieval while it trains."""

from __future__ import annotations

import logging
from pathlib import Path

from xretrieve.trainer.config import RetrievalEvalConfig

logger = logging.getLogger(__name__)


def evaluate_retrieval(checkpoint: Path, config: RetrievalEvalConfig) -> dict[str, float]:
    """Flat metrics (percent) of the encoder in ``checkpoint``:
    ``tatoeba/LANG/accuracy_xx2en``, ``.../accuracy_en2xx``, ``tatoeba/LANG/accuracy`` (their mean),
    ``bucc/LANG/f1``, ``bucc/LANG/precision``, ``bucc/LANG/recall``. The checkpoint is exported once
    through ``xretrieve.encoding.load_encoder`` (cached by content hash)."""
    from xretrieve.encoding import load_encoder

    encoder = load_encoder(checkpoint, backend=config.backend, batch_tokens=config.batch_tokens)
    metrics: dict[str, float] = {}
    if config.tatoeba:
        from xretrieve.formats import read_tatoeba
        from xretrieve.tatoeba import evaluate_tatoeba

        for lang in config.tatoeba:
            pair = read_tatoeba(config.data_dir, lang)
            result = evaluate_tatoeba(
                encoder.encode(pair.src.texts), encoder.encode(pair.eng.texts)
            )
            metrics[f"tatoeba/{lang}/accuracy_xx2en"] = float(result.accuracy_xx2en)
            metrics[f"tatoeba/{lang}/accuracy_en2xx"] = float(result.accuracy_en2xx)
            metrics[f"tatoeba/{lang}/accuracy"] = (
                result.accuracy_xx2en + result.accuracy_en2xx
            ) / 2
    if config.bucc:
        from xretrieve.bucc import evaluate_bucc
        from xretrieve.formats import read_bucc_split
        from xretrieve.margin import MiningConfig

        for lang in config.bucc:
            tune = read_bucc_split(config.data_dir, lang, config.bucc_tune_split)
            evaluation = read_bucc_split(config.data_dir, lang, config.bucc_eval_split)
            result = evaluate_bucc(
                tune,
                encoder.encode(tune.src.texts),
                encoder.encode(tune.tgt.texts),
                evaluation,
                encoder.encode(evaluation.src.texts),
                encoder.encode(evaluation.tgt.texts),
                MiningConfig(),
            )
            metrics[f"bucc/{lang}/f1"] = float(result.f1)
            metrics[f"bucc/{lang}/precision"] = float(result.precision)
            metrics[f"bucc/{lang}/recall"] = float(result.recall)
    logger.info("retrieval of %s: %s", checkpoint.name, metrics)
    return metrics
