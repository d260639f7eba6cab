"""Bootstrap confidence intervals for retrieval metrics: pure numpy, vectorised, seeded.

Two resampling schemes, both *paired*: the same seed and unit (task, language) give the same
resamples for every checkpoint, so per-checkpoint samples can be subtracted to bootstrap a gain.

- Tatoeba (``resample_indices``): the classic nonparametric bootstrap (Efron 1979) over the
  ``n`` query pairs: each resample draws ``n`` pair indices with replacement.
- BUCC (``poisson_weights``): F1 depends on the few hundred to few thousand source sentences that
  are gold-aligned or predicted, out of ~10^5 per corpus. Resampling source sentences gives each
  one a multinomial count; we use the Poisson(1) bootstrap (Hanley and MacGibbon 2006), whose
  independent per-sentence weights approximate that count for large ``n`` and can be drawn for
  just the sentences that matter. Weights come from a counter-based hash of (seed, resample,
  sentence row), so every checkpoint sees the same weight for the same sentence.

Intervals are percentile intervals (2.5th and 97.5th percentiles for 95 %).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 12345
DEFAULT_LEVEL = 0.95

# Resamples per block, bounded so that a block holds at most ~8M indices/weights.
_BLOCK_CELLS = 8_000_000


def unit_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed derived from ``seed`` and names (task, language): stable across runs and
    platforms (unlike ``hash``), so resamples are reproducible and paired across checkpoints."""
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` int64 indices drawn uniformly with replacement from ``range(n)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n), dtype=np.int64)


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``(resamples,)`` float64 means of ``values`` ``(n,)`` over index resamples.

    Drawn block by block (same stream as ``resample_indices(n, resamples, seed)``) so memory
    stays bounded for large ``n``."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        return np.full(resamples, np.nan)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        indices = rng.integers(0, n, size=(stop - start, n), dtype=np.int64)
        out[start:stop] = values[indices].mean(axis=1)
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014) on uint64 arrays: a well-mixed hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# Poisson(1) CDF for k = 0..19; the tail beyond is below 1e-18.
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def poisson_weights(
    items: np.ndarray, resamples: int, seed: int, *, first_resample: int = 0
) -> np.ndarray:
    """``(resamples, m)`` float64 Poisson(1) weights for item ids ``items`` ``(m,)`` int64, for
    resamples ``first_resample .. first_resample + resamples - 1``.

    The weight of item ``i`` in resample ``b`` depends only on ``(seed, b, i)``, never on which
    other items are asked for: two systems scored on different subsets of the same sentences get
    the same weight for each shared sentence."""
    items = np.asarray(items, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix64(np.array([seed], dtype=np.uint64))
        rows = _splitmix64(
            base ^ np.arange(first_resample, first_resample + resamples, dtype=np.uint64)
        )
        cols = _splitmix64(items * np.uint64(0xD1B54A32D192ED03))
        bits = _splitmix64(rows[:, None] ^ cols[None, :])
    uniform = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return np.searchsorted(_POISSON1_CDF, uniform, side="right").astype(np.float64)


def f1_samples(
    item_rows: np.ndarray,
    true_pos: np.ndarray,
    false_pos: np.ndarray,
    false_neg: np.ndarray,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """``(resamples,)`` bootstrap F1 in percent from per-item counts.

    ``item_rows`` ``(m,)`` int64 are the resampled units (BUCC: source-sentence rows) that carry
    any count; ``true_pos``, ``false_pos``, ``false_neg`` ``(m,)`` their counts of correct
    predictions, wrong predictions and missed gold pairs. F1 = 2 TP / (2 TP + FP + FN), and 0
    where a resample has no TP, FP or FN at all. With all weights 1 this is the point F1."""
    counts = np.stack([true_pos, false_pos, false_neg]).astype(np.float64)  # (3, m)
    m = counts.shape[1]
    out = np.empty(resamples, dtype=np.float64)
    block = max(1, _BLOCK_CELLS // max(m, 1))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        weights = poisson_weights(item_rows, stop - start, seed, first_resample=start)
        if m == 0:
            tp = fp = fn = np.zeros(stop - start)
        else:
            tp, fp, fn = (weights @ counts.T).T
        denominator = 2.0 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.where(denominator > 0, 200.0 * tp / denominator, 0.0)
    return out


def f1_percent(true_pos: float, false_pos: float, false_neg: float) -> float:
    """Point F1 in percent: 2 TP / (2 TP + FP + FN), 0 when all three are 0."""
    denominator = 2.0 * true_pos + false_pos + false_neg
    return 200.0 * true_pos / denominator if denominator > 0 else 0.0


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The ``level`` percentile interval of bootstrap ``samples`` (NaN-free), as floats."""
    samples = np.asarray(samples, dtype=np.float64)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)
