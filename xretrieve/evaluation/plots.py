"""PNG plots of evaluation results (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xretrieve.core.files import atomic_write
from xretrieve.evaluation.aggregate import Estimate


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_write(Path(path), "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def _errors(estimates: Sequence[Estimate | None]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([e.value if e else np.nan for e in estimates], dtype=float)
    err = np.zeros((2, len(estimates)))
    for i, e in enumerate(estimates):
        if e is not None and e.low is not None and e.high is not None:
            err[:, i] = (max(e.value - e.low, 0.0), max(e.high - e.value, 0.0))
    return values, err


def grouped_bars(
    path: Path,
    title: str,
    ylabel: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[Estimate | None]],
) -> None:
    """One group of bars per category (language or resource group), one bar per series
    (checkpoint), with interval whiskers where known."""
    plt = _pyplot()
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(categories) * max(len(series), 1) + 2), 4))
    x = np.arange(len(categories))
    for i, (name, estimates) in enumerate(series.items()):
        values, err = _errors(estimates)
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width, values, width, yerr=err, capsize=2, label=name
        )
    ax.set_xticks(x, categories, rotation=45 if len(categories) > 8 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def layer_lines(
    path: Path, title: str, ylabel: str, series: Mapping[str, Mapping[int, float]]
) -> None:
    """Task average by layer, one line per checkpoint."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_layer in series.items():
        layers = sorted(by_layer)
        ax.plot(layers, [by_layer[layer] for layer in layers], marker="o", label=name)
    ax.set_xlabel("layer (hidden-state index)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)
