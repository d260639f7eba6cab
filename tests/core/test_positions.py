"""The maximum-length rule: hand-computed usable positions."""

from __future__ import annotations

import pytest

from xretrieve.core.positions import usable_positions


@pytest.mark.parametrize(
    ("model_type", "positions", "pad", "usable"),
    [
        ("xlm-roberta", 514, 1, 512),  # XLM-R base/large: positions 2..513
        ("xlm-roberta", 514, None, 512),  # no pad id: RoBERTa's padding index 1
        ("roberta", 130, 0, 129),  # padding index 0: positions 1..129
        ("camembert", 514, 1, 512),
        ("bert", 512, 0, 512),  # absolute positions from 0: all usable
        (None, 64, None, 64),
        ("xlm-roberta", None, 1, None),
        ("bert", 0, 0, None),
    ],
)
def test_usable_positions(model_type, positions, pad, usable) -> None:
    assert usable_positions(model_type, positions, pad) == usable
