"""The target tasks of phase 3 as data: the nine XTREME tasks and any extra task plugged in
(``EXTRA_TARGETS``), each reported as one column of the grid.

- ``FINE_TUNED``: fine-tuned on English training data, predicted in every language, scored as
  XTREME scores it (``xretrieve.xtreme.finetune``).
- ``RETRIEVAL``: no training; sentences embedded from one layer and searched
  (``xretrieve.xtreme.retrieval``); does not depend on the seed.
- ``EXTERNAL``: a task run by a function of its own (``ExternalRunner``), e.g. zero-shot
  image-text retrieval; reported beside the XTREME tasks, never in the XTREME aggregate.

An extra task is one entry of ``EXTRA_TARGETS``::

    EXTRA_TARGETS["xflickrco"] = TargetTask(
        name="xflickrco",
        kind=TargetKind.EXTERNAL,
        main_metric="recall_at_1",
        runner="xretrieve.xtreme.image_text:run_image_text_task",
        data=("xflickrco/**/*",),
    )
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.xtreme.recipes import FINE_TUNED_TASKS
from xretrieve.xtreme.tasks import TASK_NAMES, XtremeTask, task_by_name


class TargetKind(str, enum.Enum):
    FINE_TUNED = "fine_tuned"
    RETRIEVAL = "retrieval"
    EXTERNAL = "external"


class ExternalRunner(Protocol):
    """Runs one extra target task for one checkpoint and seed: fine-tunes (or not) and
    evaluates, writing what it keeps under ``out_dir`` (the unit's folder, new or left from an
    interrupted attempt); returns per-language scores ``{lang: {metric: value}}`` in percent.
    ``recipe`` is the task's table of the run's config file (empty without one)."""

    def __call__(
        self,
        checkpoint: Path,
        data_dir: Path,
        out_dir: Path,
        *,
        seed: int,
        recipe: Mapping[str, Any],
        device: str,
        progress: ProgressCallback,
    ) -> Mapping[str, Mapping[str, float]]: ...


@dataclass(frozen=True)
class TargetTask:
    """One column of the grid. ``xtreme``: the XTREME task (None for an extra task);
    ``main_metric``: an extra task's per-language metric that its column reports; ``runner``
    ("module:function") and ``data`` (glob patterns under the data folder whose files the
    task reads: part of each unit's fingerprint) for an external task."""

    name: str
    kind: TargetKind
    xtreme: XtremeTask | None = None
    main_metric: str = "avg_metric"
    runner: str | None = None
    data: tuple[str, ...] = ()

    @property
    def seeded(self) -> bool:
        """Whether the task's result depends on the seed (retrieval does not train)."""
        return self.kind is not TargetKind.RETRIEVAL

    @property
    def in_aggregate(self) -> bool:
        return self.xtreme is not None

    def load_runner(self) -> ExternalRunner:
        if self.runner is None:
            raise XRetrieveError(f"target task {self.name!r} has no runner")
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)


def _xtreme_target(name: str) -> TargetTask:
    kind = TargetKind.FINE_TUNED if name in FINE_TUNED_TASKS else TargetKind.RETRIEVAL
    return TargetTask(name=name, kind=kind, xtreme=task_by_name(name))


XTREME_TARGETS: dict[str, TargetTask] = {name: _xtreme_target(name) for name in TASK_NAMES}

# Extra target tasks (reported as columns of their own, outside the XTREME aggregate).
EXTRA_TARGETS: dict[str, TargetTask] = {}


def all_targets() -> dict[str, TargetTask]:
    return {**XTREME_TARGETS, **EXTRA_TARGETS}


def target_by_name(name: str) -> TargetTask:
    targets = all_targets()
    if name not in targets:
        raise XRetrieveError(f"unknown target task {name!r} (known: {', '.join(targets)})")
    return targets[name]
