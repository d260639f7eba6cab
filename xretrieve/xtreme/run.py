"""``xtreme run``: phase 3 of Phang et al. (2020) for every checkpoint and target task.

For each checkpoint (the baseline first), each target task and each seed (retrieval tasks: once)
one unit (``xretrieve.xtreme.units``) fine-tunes on the English training data with the task's
recipe and chooses the checkpoint on the English dev set (``finetune``), or embeds and searches
(``retrieval``), or calls a plugged-in task's runner; it predicts every language's dev and test
files in XTREME's submission layout, and scores them against the gold written from the data with
``xtreme score``'s scorer. Reports (``grid``) put checkpoints in rows and target tasks in
columns: per split, the task scores (mean and standard deviation over seeds), XTREME's group
scores and ``all_task``, resource groups, and the difference to the baseline.

Before any work: the output folder passes the shared output guard (new, empty or an earlier
``xtreme run``; never an input), every checkpoint is read and every file located. A unit whose
record holds the fingerprint of its checkpoint, data files, recipe and seed is kept; anything
else is (re)computed, so a rerun after Ctrl-C or SIGTERM loses at most the unit that was running
(a fine-tuning unit resumes from the trainer's checkpoint), and a rerun after a data or setting
change recomputes exactly the units it touches."""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.core.interrupts import sigterm_as_interrupt
from xretrieve.core.outputs import check_output_path
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Device, parse_device
from xretrieve.evaluation.fingerprint import data_hash
from xretrieve.xtreme.data import Split
from xretrieve.xtreme.outputs import (
    LABELS_DIR,
    MODEL_DIR,
    PENDING_FILE,
    PREDICTIONS_DIR,
    RUN_FILE,
    RUN_FORMAT,
    RUN_OUTPUT,
    RUNNER_DIR,
    SUBMISSIONS_DIR,
    UNIT_FILE,
    UNITS_DIR,
    read_json,
    write_json,
)
from xretrieve.xtreme.recipes import (
    FineTuneRecipe,
    RetrievalRecipe,
    RunSettings,
    load_settings,
    recipe_json,
)
from xretrieve.xtreme.targets import (
    EXTRA_TARGETS,
    XTREME_TARGETS,
    TargetKind,
    TargetTask,
    extra_recipes,
    target_by_name,
)
from xretrieve.xtreme.units import (
    SCORED_SPLITS,
    SplitScores,
    TaskFiles,
    external_scores,
    locate_task_files,
    score_predictions,
    unit_fingerprint,
)

logger = logging.getLogger(__name__)

FINE_TUNE_FILE = "fine_tuned.json"


@dataclass(frozen=True)
class RunRequest:
    """What to run. ``tasks`` None: the nine XTREME tasks (extra tasks run when named);
    ``baseline`` is run too (first) and every other checkpoint is compared with it; ``seeds``
    fine-tuning seeds per task (``config``'s ``seed``, ``seed + 1``, ...); ``config``: a TOML file
    of recipe overrides (``xretrieve.xtreme.recipes``); ``keep_models`` keeps each unit's
    fine-tuned target checkpoint (what ``xtreme predict`` reads)."""

    checkpoints: tuple[Path, ...]
    data_dir: Path
    out_dir: Path
    tasks: tuple[str, ...] | None = None
    baseline: Path | None = None
    seeds: int = 1
    config: Path | None = None
    device: Device = Device.AUTO
    keep_models: bool = True


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint of the grid: its ``name`` in reports, its ``folder`` under ``units/``."""

    path: Path
    name: str
    folder: str
    content_hash: str
    baseline: bool


@dataclass(frozen=True)
class Unit:
    checkpoint: Checkpoint
    target: TargetTask
    seed: int | None
    fingerprint: str
    data_hash: str
    directory: Path

    @property
    def label(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        return f"{self.checkpoint.name} {self.target.name}{seed}"


@dataclass(frozen=True)
class RunSummary:
    """``ran``: the units computed by this call, ``kept``: those kept from an earlier one
    (labels ``CKPT TASK seed S``); ``grid``: the report (``grid.json``); ``files`` written."""

    out_dir: Path
    ran: tuple[str, ...]
    kept: tuple[str, ...]
    grid: dict[str, Any]
    files: tuple[Path, ...] = field(default_factory=tuple)


def run_xtreme(request: RunRequest, *, progress: ProgressCallback | None = None) -> RunSummary:
    """Run (or resume) the grid of ``request``; see the module docstring. ``InputError`` for a
    bad input, before any work; KeyboardInterrupt (and ``Terminated``, SIGTERM) after the
    running unit's clean-up."""
    progress = progress or no_progress
    with sigterm_as_interrupt():
        plan = _plan(request)
        return _execute(plan, progress)


@dataclass(frozen=True)
class _Plan:
    request: RunRequest
    settings: RunSettings
    checkpoints: tuple[Checkpoint, ...]
    targets: tuple[TargetTask, ...]
    files: dict[str, TaskFiles]
    units: tuple[Unit, ...]
    seeds: tuple[int, ...]


def _plan(request: RunRequest) -> _Plan:
    if isinstance(request.seeds, bool) or not isinstance(request.seeds, int) or request.seeds < 1:
        raise ArgumentError("seeds", f"must be a positive integer, not {request.seeds!r}")
    if not request.checkpoints:
        raise ArgumentError("checkpoints", "needs at least one checkpoint")
    device = parse_device(request.device)
    targets = _targets(request.tasks)
    data_dir = Path(request.data_dir)
    if not data_dir.is_dir():
        raise InputError(data_dir, "data_dir: not a directory (XTREME's download folder)")
    inputs = [Path(p) for p in request.checkpoints] + [data_dir]
    if request.baseline is not None:
        inputs.append(Path(request.baseline))
    if request.config is not None:
        inputs.append(Path(request.config))
    check_output_path(
        Path(request.out_dir), directory=True, option="out_dir", inputs=inputs, owner=RUN_OUTPUT
    )
    settings = load_settings(request.config, extra_recipes())
    checkpoints = _checkpoints(request)
    files = {target.name: locate_task_files(data_dir, target) for target in targets}
    seeds = tuple(settings.seed + i for i in range(request.seeds))
    units = _units(request, settings, checkpoints, targets, files, seeds)
    request = dataclasses.replace(request, device=device)
    return _Plan(request, settings, checkpoints, targets, files, units, seeds)


def _targets(names: Sequence[str] | None) -> tuple[TargetTask, ...]:
    if names is None:
        return tuple(XTREME_TARGETS.values())
    if isinstance(names, str):
        names = (names,)
    wanted = [target_by_name(name) for name in dict.fromkeys(names)]
    if not wanted:
        raise ArgumentError("tasks", "names no target task")
    order = list(XTREME_TARGETS) + list(EXTRA_TARGETS)
    return tuple(sorted(wanted, key=lambda target: order.index(target.name)))


def _checkpoints(request: RunRequest) -> tuple[Checkpoint, ...]:
    from exporters.checkpoint import read_checkpoint_config
    from xretrieve.core.cache import content_hash

    paths = [Path(p) for p in request.checkpoints]
    baseline = Path(request.baseline) if request.baseline is not None else None
    if baseline is not None:
        paths = [baseline] + [p for p in paths if not _same(p, baseline)]
    names = [path.resolve().name or str(path) for path in paths]
    found = []
    for index, path in enumerate(paths):
        read_checkpoint_config(path)  # a Hugging Face checkpoint, or InputError naming it
        name = names[index]
        if names.count(name) > 1:
            name = f"{path.resolve().parent.name}/{name}"
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__"))
        is_baseline = baseline is not None and index == 0
        found.append(Checkpoint(path, name, folder, content_hash(path), is_baseline))
    folders = [checkpoint.folder for checkpoint in found]
    if len(set(folders)) != len(folders):
        repeated = sorted({f for f in folders if folders.count(f) > 1})
        raise ArgumentError(
            "checkpoints", f"name one checkpoint twice or alike: {', '.join(repeated)}"
        )
    return tuple(found)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _recipe_json(settings: RunSettings, target: TargetTask) -> dict[str, Any]:
    return recipe_json(settings.recipe(target.name))


def _units(
    request: RunRequest,
    settings: RunSettings,
    checkpoints: Sequence[Checkpoint],
    targets: Sequence[TargetTask],
    files: dict[str, TaskFiles],
    seeds: Sequence[int],
) -> tuple[Unit, ...]:
    data_dir = Path(request.data_dir)
    hashes = {name: data_hash(task_files.paths(), data_dir) for name, task_files in files.items()}
    units = []
    for checkpoint in checkpoints:
        for target in targets:
            recipe = _recipe_json(settings, target)
            for seed in seeds if target.seeded else (None,):
                directory = Path(request.out_dir) / UNITS_DIR / checkpoint.folder / target.name
                if seed is not None:
                    directory = directory / f"seed-{seed}"
                fingerprint = unit_fingerprint(
                    target.name, checkpoint.content_hash, hashes[target.name], recipe, seed
                )
                units.append(
                    Unit(checkpoint, target, seed, fingerprint, hashes[target.name], directory)
                )
    return tuple(units)


def _execute(plan: _Plan, progress: ProgressCallback) -> RunSummary:
    from xretrieve.xtreme.grid import write_grid_reports

    out_dir = Path(plan.request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RUN_FILE, _manifest(plan))
    _write_labels(plan, out_dir / LABELS_DIR)
    ran: list[str] = []
    kept: list[str] = []
    records = []
    progress("units", 0, len(plan.units))
    for done, unit in enumerate(plan.units, start=1):
        record = _finished(unit)
        if record is None:
            logger.info("unit %s: running", unit.label)
            record = _run_unit(plan, unit, progress)
            ran.append(unit.label)
        else:
            logger.info("unit %s: kept (same checkpoint, data, recipe and seed)", unit.label)
            kept.append(unit.label)
        records.append(record)
        progress("units", done, len(plan.units))
    _write_submissions(plan, out_dir / SUBMISSIONS_DIR)
    grid, files = write_grid_reports(out_dir, plan_json(plan), records)
    return RunSummary(out_dir, tuple(ran), tuple(kept), grid, tuple(files))


def plan_json(plan: _Plan) -> dict[str, Any]:
    """What the reports need to know of the run besides the unit records."""
    return {
        "preset": plan.settings.preset,
        "seeds": list(plan.seeds),
        "checkpoints": [
            {"name": c.name, "path": str(c.path), "baseline": c.baseline, "hash": c.content_hash}
            for c in plan.checkpoints
        ],
        "tasks": [t.name for t in plan.targets],
        "extra_tasks": [t.name for t in plan.targets if not t.in_aggregate],
    }


def _manifest(plan: _Plan) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "data_dir": str(plan.request.data_dir),
        **plan_json(plan),
        "recipes": {t.name: _recipe_json(plan.settings, t) for t in plan.targets},
        "languages": {
            name: {split.value: list(files.languages(split)) for split in SCORED_SPLITS}
            for name, files in plan.files.items()
        },
    }


def _write_labels(plan: _Plan, labels_root: Path) -> None:
    """The gold of every labelled dev and test file of the run's XTREME tasks (stale files of
    an earlier run's data removed first)."""
    from xretrieve.xtreme import finetune, retrieval

    for target in plan.targets:
        if target.xtreme is None:
            continue
        for split in SCORED_SPLITS:
            shutil.rmtree(labels_root / split.value / target.name, ignore_errors=True)
        write_gold = (
            finetune.write_finetuned_gold
            if target.kind is TargetKind.FINE_TUNED
            else retrieval.write_retrieval_gold
        )
        write_gold(target.xtreme, plan.files[target.name], labels_root)


def _finished(unit: Unit) -> dict[str, Any] | None:
    """The unit's record when it holds this unit's fingerprint."""
    record = read_json(unit.directory / UNIT_FILE)
    if isinstance(record, dict) and record.get("fingerprint") == unit.fingerprint:
        return record
    return None


def _run_unit(plan: _Plan, unit: Unit, progress: ProgressCallback) -> dict[str, Any]:
    """Compute one unit and write its record (last). Its folder is reused only when it was
    started for the same fingerprint (a fine-tuning then resumes); otherwise it is emptied."""
    directory = unit.directory
    pending = read_json(directory / PENDING_FILE)
    if directory.exists() and not (
        isinstance(pending, dict) and pending.get("fingerprint") == unit.fingerprint
    ):
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / PENDING_FILE, {"fingerprint": unit.fingerprint, "unit": unit.label})

    def report(stage: str, done: int, total: int | None) -> None:
        progress(f"{unit.label}: {stage}", done, total)

    started = time.perf_counter()
    record: dict[str, Any] = {
        "format": 1,
        "fingerprint": unit.fingerprint,
        "checkpoint": unit.checkpoint.name,
        "checkpoint_path": str(unit.checkpoint.path),
        "checkpoint_hash": unit.checkpoint.content_hash,
        "task": unit.target.name,
        "kind": unit.target.kind.value,
        "seed": unit.seed,
        "data_hash": unit.data_hash,
        "recipe": _recipe_json(plan.settings, unit.target),
    }
    if unit.target.kind is TargetKind.FINE_TUNED:
        record.update(_fine_tuned_unit(plan, unit, report))
    elif unit.target.kind is TargetKind.RETRIEVAL:
        record.update(_retrieval_unit(plan, unit, report))
    else:
        record.update(_external_unit(plan, unit, report))
    record["seconds"] = {**record.get("seconds", {}), "total": time.perf_counter() - started}
    write_json(directory / UNIT_FILE, record)
    # Only a resumed attempt of this unit needs the runner's folder (its training run).
    shutil.rmtree(directory / RUNNER_DIR, ignore_errors=True)
    return record


def _scores(plan: _Plan, unit: Unit) -> dict[str, Any]:
    labels_root = Path(plan.request.out_dir) / LABELS_DIR
    scores: dict[str, Any] = {}
    for split in SCORED_SPLITS:
        result = score_predictions(
            unit.target, unit.directory / PREDICTIONS_DIR, labels_root, split
        )
        scores[split.value] = None if result is None else result.to_json()
    return scores


def _fine_tuned_unit(plan: _Plan, unit: Unit, report: ProgressCallback) -> dict[str, Any]:
    from xretrieve.xtreme.finetune import fine_tune, predict_files

    recipe = plan.settings.recipe(unit.target.name)
    assert isinstance(recipe, FineTuneRecipe) and unit.seed is not None and unit.target.xtreme
    files = plan.files[unit.target.name]
    directory = unit.directory
    device = plan.request.device.value
    fine_tuned = read_json(directory / FINE_TUNE_FILE)
    if not (directory / MODEL_DIR / "config.json").is_file() or not isinstance(fine_tuned, dict):
        fine_tuned = fine_tune(
            unit.target.name,
            files,
            recipe,
            unit.checkpoint.path,
            directory,
            unit.seed,
            device=device,
            progress=report,
        ).to_json()
        write_json(directory / FINE_TUNE_FILE, fine_tuned)
    shutil.rmtree(directory / PREDICTIONS_DIR, ignore_errors=True)
    started = time.perf_counter()
    predicted = predict_files(
        directory / MODEL_DIR,
        unit.target.xtreme,
        files,
        directory / PREDICTIONS_DIR,
        device=device,
        batch_size=recipe.eval_batch_size,
        progress=report,
    )
    predict_seconds = time.perf_counter() - started
    scores = _scores(plan, unit)
    if not plan.request.keep_models:
        shutil.rmtree(directory / MODEL_DIR, ignore_errors=True)
    return {
        "fine_tuning": fine_tuned,
        "model": MODEL_DIR if plan.request.keep_models else None,
        "predicted_examples": predicted,
        "seconds": {"train": fine_tuned["seconds"], "predict": predict_seconds},
        "scores": scores,
    }


def _retrieval_unit(plan: _Plan, unit: Unit, report: ProgressCallback) -> dict[str, Any]:
    from xretrieve.xtreme.retrieval import predict_retrieval

    recipe = plan.settings.recipe(unit.target.name)
    assert isinstance(recipe, RetrievalRecipe) and unit.target.xtreme is not None
    shutil.rmtree(unit.directory / PREDICTIONS_DIR, ignore_errors=True)
    started = time.perf_counter()
    protocol, details = predict_retrieval(
        unit.checkpoint.path,
        unit.target.xtreme,
        plan.files[unit.target.name],
        recipe,
        unit.directory / PREDICTIONS_DIR,
        device=plan.request.device,
        progress=report,
    )
    return {
        "protocol": protocol.to_json(),
        "details": details,
        "seconds": {"predict": time.perf_counter() - started},
        "scores": _scores(plan, unit),
    }


def _external_unit(plan: _Plan, unit: Unit, report: ProgressCallback) -> dict[str, Any]:
    """Call the task's runner in ``UNIT/runner`` (removed once the unit is recorded); keep the
    target checkpoint it selected as ``UNIT/model`` (without optimizer state), its prediction
    files as ``UNIT/predictions/SPLIT/TASK/`` and its per-language scores as the splits'."""
    from xretrieve.xtreme.finetune import keep_model

    target = unit.target
    work = unit.directory / RUNNER_DIR
    started = time.perf_counter()
    outcome = target.load_runner()(
        unit.checkpoint.path,
        Path(plan.request.data_dir),
        work,
        seed=unit.seed if unit.seed is not None else plan.settings.seed,
        recipe=plan.settings.recipe(target.name),
        device=plan.request.device,
        progress=report,
    )
    scores: SplitScores = external_scores(target, outcome.scores)
    dev = external_scores(target, outcome.dev_scores) if outcome.dev_scores else None
    shutil.rmtree(unit.directory / PREDICTIONS_DIR, ignore_errors=True)
    for split in SCORED_SPLITS:
        source = None if outcome.predictions is None else Path(outcome.predictions) / split.value
        if source is not None and source.is_dir():
            shutil.copytree(source, unit.directory / PREDICTIONS_DIR / split.value / target.name)
    fine_tuned = outcome.fine_tuned
    kept = fine_tuned is not None and plan.request.keep_models
    if kept:
        keep_model(fine_tuned, unit.directory / MODEL_DIR)
    selected = None if fine_tuned is None else _relative(Path(fine_tuned), work)
    return {
        # the runner's record, its target checkpoint named within the runner's folder
        "outcome": {**outcome.to_json(), "fine_tuned": selected},
        "model": MODEL_DIR if kept else None,
        "seconds": {"run": time.perf_counter() - started},
        "scores": {
            Split.DEV.value: None if dev is None else dev.to_json(),
            Split.TEST.value: scores.to_json(),
        },
    }


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _write_submissions(plan: _Plan, root: Path) -> None:
    """``submissions/CKPT/seed-S/{dev,test}/TASK/...``: every XTREME task's predictions of one
    checkpoint and seed in one folder, as XTREME's leaderboard takes a submission."""
    shutil.rmtree(root, ignore_errors=True)
    for unit in plan.units:
        if unit.target.xtreme is None:
            continue
        seeds = plan.seeds if unit.seed is None else (unit.seed,)
        for seed in seeds:
            for split in SCORED_SPLITS:
                source = unit.directory / PREDICTIONS_DIR / split.value / unit.target.name
                if source.is_dir():
                    target = root / unit.checkpoint.folder / f"seed-{seed}" / split.value
                    shutil.copytree(source, target / unit.target.name)
