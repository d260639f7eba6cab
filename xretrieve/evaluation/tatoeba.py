"""Tatoeba retrieval accuracy (XTREME ``similarity_search`` and LASER's xsim).

Row i of the other language translates row i of English. Each sentence retrieves its nearest
neighbour by cosine similarity among the other side; accuracy is the percentage whose neighbour
is its own translation. ``en2xx`` (English queries, the other language as database) is the
direction XTREME reports (``similarity_search(x, y)`` indexes x = xx and queries y = en); ``xx2en``
is LASER's xsim direction. XTREME searches with L2 distance on normalised vectors, which ranks as
cosine does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xretrieve.core.progress import ProgressCallback
from xretrieve.knn.exact import knn_both_ways


@dataclass(frozen=True)
class TatoebaResult:
    """Top-1 accuracies in percent over ``n`` aligned pairs."""

    accuracy_en2xx: float
    accuracy_xx2en: float
    n: int


def score_tatoeba(
    xx_emb: np.ndarray,
    en_emb: np.ndarray,
    *,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> TatoebaResult:
    """Top-1 cosine retrieval accuracy both ways; ``xx_emb`` and ``en_emb`` are (n, d) float."""
    if xx_emb.shape[0] != en_emb.shape[0]:
        raise ValueError(f"row counts differ: {xx_emb.shape[0]} vs {en_emb.shape[0]}")
    xx2en_sims, xx2en_ids, en2xx_sims, en2xx_ids = knn_both_ways(
        xx_emb, en_emb, 1, device=device, normalize=True, progress=progress
    )
    rows = np.arange(xx_emb.shape[0])
    return TatoebaResult(
        accuracy_en2xx=100 * float(np.mean(en2xx_ids[:, 0] == rows)),
        accuracy_xx2en=100 * float(np.mean(xx2en_ids[:, 0] == rows)),
        n=int(rows.size),
    )
