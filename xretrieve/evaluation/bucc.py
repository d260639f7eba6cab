"""BUCC 2018 evaluation of one language: the threshold tuned on one split's gold and applied to
another split (``score_bucc``), with the steps of ``xretrieve.mining.gold``."""

from __future__ import annotations

import numpy as np

from xretrieve.core.progress import ProgressCallback
from xretrieve.formats import BuccSplit
from xretrieve.mining.gold import BuccResult, apply_threshold, tune_threshold
from xretrieve.mining.margin import DEFAULT_CONFIG, MiningConfig


def score_bucc(
    tune: BuccSplit,
    tune_src_emb: np.ndarray,
    tune_tgt_emb: np.ndarray,
    evaluation: BuccSplit,
    eval_src_emb: np.ndarray,
    eval_tgt_emb: np.ndarray,
    config: MiningConfig = DEFAULT_CONFIG,
    *,
    progress: ProgressCallback | None = None,
) -> BuccResult:
    """Tune the threshold on ``tune``, apply it to ``evaluation`` (XTREME ``bucc_eval``).

    Embeddings are (lines, d) float with rows aligned with ``split.src.texts`` /
    ``split.tgt.texts``. Without evaluation gold only the threshold and counts are known.
    """
    threshold, tune_f1 = tune_threshold(tune, tune_src_emb, tune_tgt_emb, config, progress=progress)
    return apply_threshold(
        evaluation, eval_src_emb, eval_tgt_emb, threshold, tune_f1, config, progress=progress
    ).result
