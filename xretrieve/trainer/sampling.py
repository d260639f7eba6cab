"""Multi-task sampling: which task the next batch comes from, and which of its examples.

The sampler's whole state is a numpy bit-generator state and a (epoch, position) pair per task;
each task's order in an epoch is a permutation derived from (seed, task, epoch), so resuming needs
no saved permutations and continues exactly where a run stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xretrieve.trainer.config import SamplingStrategy


def task_probabilities(
    sizes: Sequence[int],
    strategy: SamplingStrategy,
    temperature: float = 2.0,
    cap: int | None = None,
) -> np.ndarray:
    """Probability of drawing each task, ``(n_tasks,)`` float64 summing to 1. Sizes are first
    capped at ``cap``; proportional is p_i ~ n_i, uniform p_i = 1/T, temperature p_i ~ n_i**(1/t)
    (t=1 is proportional, large t tends to uniform; as in multilingual BERT/XLM sampling)."""
    counts = np.asarray(sizes, dtype=np.float64)
    if counts.ndim != 1 or len(counts) == 0 or (counts <= 0).any():
        raise ValueError(f"task sizes must be positive, got {list(sizes)}")
    if cap is not None:
        counts = np.minimum(counts, cap)
    if strategy is SamplingStrategy.UNIFORM:
        weights = np.ones_like(counts)
    elif strategy is SamplingStrategy.PROPORTIONAL:
        weights = counts
    else:
        weights = counts ** (1.0 / temperature)
    return weights / weights.sum()


GROUP_FACTOR = 50  # batches per length-sorted group, as transformers' LengthGroupedSampler


def length_grouped(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """``order`` regrouped so that each batch holds examples of similar length: consecutive
    groups of ``GROUP_FACTOR * batch_size`` examples are sorted longest first (stable), cut into
    batches, and the batches of each group put in random order. Every example stays in the
    epoch once; padding drops to about the spread of lengths within a batch."""
    group = GROUP_FACTOR * batch_size
    pieces = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        pieces += [batches[i] for i in rng.permutation(len(batches))]
    return np.concatenate(pieces) if pieces else order


class TaskSampler:
    """Draws (task index, example indices) batches: the task with ``probabilities``, the examples
    by walking that task's current shuffled epoch (length-grouped when ``lengths`` are given). A
    batch never straddles two epochs (the tail of an epoch is a short batch), so every example
    is seen once per epoch."""

    def __init__(
        self,
        sizes: Sequence[int],
        batch_sizes: Sequence[int],
        probabilities: np.ndarray,
        seed: int,
        lengths: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.sizes = list(sizes)
        self.batch_sizes = list(batch_sizes)
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.seed = seed
        self.lengths = None if lengths is None else [np.asarray(x) for x in lengths]
        self.rng = np.random.default_rng([seed, 0x7A5C])
        self.epochs = [0] * len(self.sizes)
        self.positions = [0] * len(self.sizes)
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    def _order(self, task: int) -> np.ndarray:
        cached = self._orders.get(task)
        if cached is None or cached[0] != self.epochs[task]:
            rng = np.random.default_rng([self.seed, task, self.epochs[task]])
            order = rng.permutation(self.sizes[task])
            if self.lengths is not None:
                order = length_grouped(order, self.lengths[task], self.batch_sizes[task], rng)
            cached = (self.epochs[task], order)
            self._orders[task] = cached
        return cached[1]

    def next(self) -> tuple[int, np.ndarray]:
        """A task drawn with ``probabilities`` and its next batch."""
        task = self.draw_task()
        return task, self.take(task)

    def draw_task(self) -> int:
        return int(self.rng.choice(len(self.sizes), p=self.probabilities))

    def take(self, task: int) -> np.ndarray:
        """The next batch of ``task``'s current epoch (indices into its examples)."""
        order = self._order(task)
        start = self.positions[task]
        stop = min(start + self.batch_sizes[task], self.sizes[task])
        indices = order[start:stop]
        if stop >= self.sizes[task]:
            self.epochs[task] += 1
            self.positions[task] = 0
        else:
            self.positions[task] = stop
        return indices

    def draws(self) -> list[int]:
        """Batches taken from each task since the run's first step (resumed runs included): an
        epoch of task ``i`` is ``ceil(size_i / batch_i)`` batches and ``positions[i]`` advances
        by whole batches, so the count follows from the sampler's state alone."""
        return [
            epoch * -(-size // batch) + -(-position // batch)
            for epoch, position, size, batch in zip(
                self.epochs, self.positions, self.sizes, self.batch_sizes, strict=True
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "epochs": list(self.epochs),
            "positions": list(self.positions),
            "sizes": list(self.sizes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["sizes"]) != self.sizes:
            raise ValueError(
                f"the data changed since the checkpoint: task sizes {state['sizes']} vs {self.sizes}"
            )
        self.rng.bit_generator.state = state["rng"]
        self.epochs = list(state["epochs"])
        self.positions = list(state["positions"])
