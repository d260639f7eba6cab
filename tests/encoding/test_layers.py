"""One ``--layers`` parser for embed, export and evaluate, raising the library's InputError."""

from __future__ import annotations

import pytest

from xretrieve.core.errors import InputError
from xretrieve.encoding.layers import LayerSpec, parse_layer_indices, parse_layer_spec
from xretrieve.evaluation import parse_layers


@pytest.mark.parametrize(
    ("text", "indices"),
    [
        ("6,12", (6, 12)),
        ("-1", (-1,)),
        (" 8, 12 ,", (8, 12)),
        ("", None),
        (",", None),
        (None, None),
    ],
)
def test_parse_layer_indices(text, indices) -> None:
    assert parse_layer_indices(text) == indices


@pytest.mark.parametrize("text", ["a,b", "1.5", "all"])
def test_parse_layer_indices_rejects_non_integers(text) -> None:
    with pytest.raises(InputError, match="layers takes comma-separated integers"):
        parse_layer_indices(text)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("all", LayerSpec(every=True)),
        (" ALL ", LayerSpec(every=True)),
        ("8,12,-1", LayerSpec(indices=(8, 12, -1))),
        (None, LayerSpec()),
        ("  ", LayerSpec()),
    ],
)
def test_parse_layer_spec(text, spec) -> None:
    assert parse_layer_spec(text) == spec
    assert parse_layers(text) == spec


def test_parse_layer_spec_rejects_words_but_all() -> None:
    with pytest.raises(InputError, match="must be 'all' or integers"):
        parse_layer_spec("last")


def test_a_spec_is_every_layer_or_indices() -> None:
    with pytest.raises(ValueError):
        LayerSpec(indices=(1,), every=True)
    assert LayerSpec().is_default and not LayerSpec(every=True).is_default
