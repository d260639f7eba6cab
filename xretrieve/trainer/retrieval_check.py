"""Retrieval-aware training: score a saved checkpoint on Tatoeba and BUCC with the toolkit's own
export, encoding and evaluation path, so a run shows how intermediate training moves
cross-lingual retrieval while it trains."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.formats import Corpus
from xretrieve.trainer.config import RetrievalEvalConfig

logger = logging.getLogger(__name__)


def check_retrieval_data(config: RetrievalEvalConfig) -> None:
    """Read every file the run's retrieval evaluations will need, before training starts: a
    missing file or a bad line is an InputError now, not at the first checkpoint. A missing
    file with a code of the other convention gets a hint (Tatoeba files in XTREME use ISO 639-3
    codes such as ``deu``, BUCC 2018 ISO 639-1 codes such as ``de``)."""
    from xretrieve.formats import read_bucc_split, read_tatoeba
    from xretrieve.formats.bucc import bucc_paths
    from xretrieve.formats.tatoeba import tatoeba_paths

    for lang in config.tatoeba:
        for path in tatoeba_paths(config.data_dir, lang):
            if not path.is_file():
                hint = (
                    "; XTREME's Tatoeba files use three-letter codes (deu, fra, rus, cmn, ...)"
                    if len(lang) == 2
                    else ""
                )
                raise InputError(path, f"retrieval_eval: no Tatoeba file for '{lang}'{hint}")
        read_tatoeba(config.data_dir, lang)
    for lang in config.bucc:
        for split in dict.fromkeys((config.bucc_tune_split, config.bucc_eval_split)):
            for path in bucc_paths(config.data_dir, lang, split):
                if not path.is_file():
                    hint = (
                        "; BUCC 2018 files use two-letter codes (de, fr, ru, zh)"
                        if len(lang) == 3
                        else ""
                    )
                    raise InputError(
                        path, f"retrieval_eval: no BUCC '{split}' file for '{lang}'{hint}"
                    )
            read_bucc_split(config.data_dir, lang, split)


def _layer_vectors(encoder: object, corpus: Corpus, n_layers: int) -> list[np.ndarray]:
    """One ``(n, dim)`` array per configured layer, each distinct text encoded once (the
    commands' ``EncoderSource`` path)."""
    from xretrieve.mining.sources import EncoderSource, encode_distinct

    if n_layers == 1:
        return [EncoderSource(encoder).embed(corpus)]  # type: ignore[arg-type]
    stacked = encode_distinct(corpus.texts, encoder.encode_layers)  # type: ignore[attr-defined]
    return [stacked[:, i] for i in range(n_layers)]


def evaluate_retrieval(checkpoint: Path, config: RetrievalEvalConfig) -> dict[str, float]:
    """Flat metrics (percent) of the encoder in ``checkpoint``, named as ``xretrieve evaluate``
    names them: ``tatoeba/LANG/accuracy_en2xx`` (English queries, XTREME's direction),
    ``tatoeba/LANG/accuracy_xx2en``, ``bucc/LANG/f1``, ``.../precision``, ``.../recall``. With
    several ``layers`` each key gets a ``layerL/`` part after the language
    (``tatoeba/deu/layer14/accuracy_en2xx``). The checkpoint is exported once through
    ``xretrieve.encoding.load_encoder`` (cached by content hash)."""
    from xretrieve.encoding import load_encoder

    layers = config.layers or (-1,)
    encoder = load_encoder(
        checkpoint, backend=config.backend, batch_tokens=config.batch_tokens, layers=layers
    )
    tags = [""] if len(layers) == 1 else [f"layer{layer}/" for layer in layers]
    metrics: dict[str, float] = {}
    if config.tatoeba:
        from xretrieve.evaluation.tatoeba import score_tatoeba
        from xretrieve.formats import read_tatoeba

        for lang in config.tatoeba:
            pair = read_tatoeba(config.data_dir, lang)
            src = _layer_vectors(encoder, pair.src, len(layers))
            eng = _layer_vectors(encoder, pair.eng, len(layers))
            for tag, src_emb, eng_emb in zip(tags, src, eng, strict=True):
                result = score_tatoeba(src_emb, eng_emb)
                metrics[f"tatoeba/{lang}/{tag}accuracy_en2xx"] = float(result.accuracy_en2xx)
                metrics[f"tatoeba/{lang}/{tag}accuracy_xx2en"] = float(result.accuracy_xx2en)
    if config.bucc:
        from xretrieve.evaluation.bucc import score_bucc
        from xretrieve.formats import read_bucc_split
        from xretrieve.mining.margin import MiningConfig

        for lang in config.bucc:
            tune = read_bucc_split(config.data_dir, lang, config.bucc_tune_split)
            evaluation = read_bucc_split(config.data_dir, lang, config.bucc_eval_split)
            vectors = [
                _layer_vectors(encoder, corpus, len(layers))
                for corpus in (tune.src, tune.tgt, evaluation.src, evaluation.tgt)
            ]
            for i, tag in enumerate(tags):
                result = score_bucc(
                    tune,
                    vectors[0][i],
                    vectors[1][i],
                    evaluation,
                    vectors[2][i],
                    vectors[3][i],
                    MiningConfig(),
                )
                metrics[f"bucc/{lang}/{tag}f1"] = float(result.f1)
                metrics[f"bucc/{lang}/{tag}precision"] = float(result.precision)
                metrics[f"bucc/{lang}/{tag}recall"] = float(result.recall)
    logger.info("retrieval of %s: %s", checkpoint.name, metrics)
    return metrics
