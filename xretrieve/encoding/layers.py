"""Which hidden layers to use, as the ``layers`` text of ``embed``, ``export`` and ``evaluate``
(their ``--layers`` option) writes them: one parser, raising ``InputError`` that names the
parameter."""

from __future__ import annotations

from dataclasses import dataclass

from xretrieve.core.errors import InputError

ALL = "all"


@dataclass(frozen=True)
class LayerSpec:
    """``indices``: hidden-state indices (1..L, -1 = last); ``every``: every layer (hidden states
    1..L of a checkpoint, every layer of an export); neither: the model's default."""

    indices: tuple[int, ...] | None = None
    every: bool = False

    def __post_init__(self) -> None:
        if self.every and self.indices is not None:
            raise ValueError("a LayerSpec is either every layer or listed indices, not both")

    @property
    def is_default(self) -> bool:
        return self.indices is None and not self.every


def parse_layer_indices(text: str | None, option: str = "layers") -> tuple[int, ...] | None:
    """``"6,12,-1"`` -> ``(6, 12, -1)``; None, blank or only commas -> None; ``InputError``
    naming the parameter ``option`` for anything else."""
    if text is None:
        return None
    try:
        indices = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(
            None,
            f"{{{option}}} takes comma-separated integers (e.g. -1 or 6,12), not {text!r}",
            arguments=(option,),
        ) from None
    return indices or None


def parse_layer_spec(text: str | None, option: str = "layers") -> LayerSpec:
    """``"all"`` -> every layer; ``"8,12,-1"`` -> those indices; None or blank -> the model's
    default; ``InputError`` naming the parameter ``option`` otherwise."""
    if text is not None and text.strip().lower() == ALL:
        return LayerSpec(every=True)
    try:
        return LayerSpec(indices=parse_layer_indices(text, option))
    except InputError:
        raise InputError(
            None,
            f"{{{option}}} must be 'all' or integers like 8,12,-1, not {text!r}",
            arguments=(option,),
        ) from None
