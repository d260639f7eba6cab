"""Tatoeba accuracy in both directions."""

from __future__ import annotations

import numpy as np
import pytest
from mining_fixtures import unit_rows

from xretrieve.evaluation.tatoeba import TatoebaResult, score_tatoeba


def test_planted_translations_are_all_found() -> None:
    rng = np.random.default_rng(0)
    xx = unit_rows(rng.standard_normal((200, 32)))
    en = unit_rows(xx + 0.05 * rng.standard_normal((200, 32)))
    assert score_tatoeba(xx, en, device="cpu") == TatoebaResult(100.0, 100.0, 200)


def test_directions_are_not_swapped() -> None:
    """xx1 = (1, 0.2) is nearer en0 = (1, 0) than en1 = (0, 1): xx2en gets 1 of 2 right. Each
    English sentence finds its own translation: en2xx is perfect."""
    xx = np.array([[1.0, 0.1], [1.0, 0.2]], np.float32)
    en = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    result = score_tatoeba(xx, en, device="cpu")
    assert (result.accuracy_en2xx, result.accuracy_xx2en, result.n) == (100.0, 50.0, 2)


def test_cosine_not_inner_product() -> None:
    """A long vector does not win by its norm."""
    xx = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    en = np.array([[10.0, 9.0], [0.0, 1.0]], np.float32)
    assert score_tatoeba(xx, en, device="cpu").accuracy_xx2en == 100.0


def test_row_counts_must_match() -> None:
    with pytest.raises(ValueError, match="row counts differ"):
        score_tatoeba(np.ones((2, 3)), np.ones((3, 3)), device="cpu")
