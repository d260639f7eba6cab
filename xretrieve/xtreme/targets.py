"""The target tasks of phase 3 as data: the nine XTREME tasks and any extra task plugged in
(``EXTRA_TARGETS``), each reported as one column of the grid.

- ``FINE_TUNED``: fine-tuned on English training data, predicted in every language, scored as
  XTREME scores it (``xretrieve.xtreme.finetune``).
- ``RETRIEVAL``: no training; sentences embedded from one layer and searched
  (``xretrieve.xtreme.retrieval``); does not depend on the seed.
- ``EXTERNAL``: a task run by a function of its own (``ExternalRunner``), e.g. zero-shot
  image-text retrieval; reported beside the XTREME tasks, never in the XTREME aggregate.

An extra task is one entry of ``EXTRA_TARGETS``, three functions of its own module named by
``"module:attribute"`` (imported when the task is run): its runner, its recipe (a frozen
dataclass whose defaults the config file's ``[TASK]`` table overrides, checked as XTREME
tasks' recipes are) and the locator of its data files (read and checked before any work; their
sizes and hashes are part of each unit's fingerprint). The one extra task, ``xflickrco``::

    TargetTask(
        name="xflickrco",
        kind=TargetKind.EXTERNAL,
        main_metric="r1_mean",
        runner="xretrieve.xtreme.image_text:run_image_text_task",
        recipe="xretrieve.xtreme.image_text:ImageTextRecipe",
        files="xretrieve.xtreme.image_text:image_text_files",
    )
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.settings import Device
from xretrieve.xtreme.recipes import FINE_TUNED_TASKS
from xretrieve.xtreme.tasks import TASK_NAMES, XtremeTask, task_by_name


class TargetKind(str, enum.Enum):
    FINE_TUNED = "fine_tuned"
    RETRIEVAL = "retrieval"
    EXTERNAL = "external"


class ExternalOutcome(Protocol):
    """What an external runner returns: ``scores[lang][metric]`` in percent for every language
    it scored on the test split, ``dev_scores`` the same on the dev split (the English dev set
    it selected on; empty: none), ``predictions`` a folder of its prediction files, one
    sub-folder per split (``dev/``, ``test/``; None: it writes none), ``fine_tuned`` the target
    checkpoint it selected (None: it trains none), ``to_json()`` its record (written into the
    unit's ``unit.json``)."""

    @property
    def scores(self) -> Mapping[str, Mapping[str, float]]: ...

    @property
    def dev_scores(self) -> Mapping[str, Mapping[str, float]]: ...

    @property
    def predictions(self) -> Path | None: ...

    @property
    def fine_tuned(self) -> Path | None: ...

    def to_json(self) -> dict[str, Any]: ...


class ExternalRunner(Protocol):
    """Runs one extra target task for one checkpoint and seed: fine-tunes (or not) and
    evaluates, writing what it keeps under ``out_dir`` (new, or left by an interrupted attempt
    of the same unit, which it resumes; removed once the unit is recorded). ``recipe`` is an
    instance of the task's recipe class."""

    def __call__(
        self,
        checkpoint: Path,
        data_dir: Path,
        out_dir: Path,
        *,
        seed: int,
        recipe: Any,
        device: Device,
        progress: ProgressCallback,
    ) -> ExternalOutcome: ...


class DataLocator(Protocol):
    """Every file an extra task reads under the data folder, read and checked: ``InputError``
    naming the file (and line) for what is missing or wrong."""

    def __call__(self, data_dir: Path) -> Sequence[Path]: ...


def _load(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class TargetTask:
    """One column of the grid. ``xtreme``: the XTREME task (None for an extra task);
    ``main_metric``: an extra task's per-language metric that its column reports; ``runner``
    (an ``ExternalRunner``), ``recipe`` (its recipe class) and ``files`` (a ``DataLocator``),
    each as ``"module:attribute"``, for an external task."""

    name: str
    kind: TargetKind
    xtreme: XtremeTask | None = None
    main_metric: str = "avg_metric"
    runner: str | None = None
    recipe: str | None = None
    files: str | None = None

    @property
    def seeded(self) -> bool:
        """Whether the task's result depends on the seed (retrieval does not train)."""
        return self.kind is not TargetKind.RETRIEVAL

    @property
    def in_aggregate(self) -> bool:
        return self.xtreme is not None

    def _spec(self, name: str) -> str:
        spec = getattr(self, name)
        if spec is None:
            raise XRetrieveError(f"target task {self.name!r} has no {name}")
        return spec

    def load_runner(self) -> ExternalRunner:
        return _load(self._spec("runner"))

    def default_recipe(self) -> Any:
        """An instance of the task's recipe class with its defaults."""
        return _load(self._spec("recipe"))()

    def locate_files(self, data_dir: Path) -> tuple[Path, ...]:
        locator: DataLocator = _load(self._spec("files"))
        return tuple(Path(path) for path in locator(Path(data_dir)))


def _xtreme_target(name: str) -> TargetTask:
    kind = TargetKind.FINE_TUNED if name in FINE_TUNED_TASKS else TargetKind.RETRIEVAL
    return TargetTask(name=name, kind=kind, xtreme=task_by_name(name))


XTREME_TARGETS: dict[str, TargetTask] = {name: _xtreme_target(name) for name in TASK_NAMES}

# Extra target tasks: columns of their own, outside the XTREME aggregate, run only when named
# (``--tasks``). ``xflickrco``: zero-shot cross-lingual image-text retrieval as IGLUE's
# xFlickr&CO, on ``DATA/image_text/`` (``docs/multimodal.md``).
EXTRA_TARGETS: dict[str, TargetTask] = {
    "xflickrco": TargetTask(
        name="xflickrco",
        kind=TargetKind.EXTERNAL,
        main_metric="r1_mean",
        runner="xretrieve.xtreme.image_text:run_image_text_task",
        recipe="xretrieve.xtreme.image_text:ImageTextRecipe",
        files="xretrieve.xtreme.image_text:image_text_files",
    ),
}


def extra_recipes() -> dict[str, Any]:
    """Each extra task's default recipe (what its config table overrides)."""
    return {name: target.default_recipe() for name, target in EXTRA_TARGETS.items()}


def all_targets() -> dict[str, TargetTask]:
    return {**XTREME_TARGETS, **EXTRA_TARGETS}


def target_by_name(name: str) -> TargetTask:
    targets = all_targets()
    if name not in targets:
        raise XRetrieveError(f"unknown target task {name!r} (known: {', '.join(targets)})")
    return targets[name]
