"""``evaluate``: checkpoints -> results.jsonl, results.csv, leaderboard.md, plots.

For each checkpoint the runner

1. plans: its content hash, the layers to score, and the embedding-cache directory (``plan_model``);
2. skips units (checkpoint, layer, task, language) already in ``results.jsonl`` (resume);
3. for each pending (task, language): loads the data (a missing or bad file becomes an error row
   for that language only), encodes the texts missing from the cache in one pass for all
   layers, and hands the embeddings to a scoring thread, so that kNN and margin scoring of one
   language overlap with encoding of the next (the engine already tokenises in the background);
4. appends each unit's rows (and bootstrap samples) as soon as it is scored.

The encoder is created only when some text is not cached: a re-run with nothing new never loads
or exports the model. Reports are rebuilt from ``results.jsonl`` at the end of every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from xretrieve.cache import cache_dir, content_hash
from xretrieve.encoding.settings import Backend, Device, SourceKind, parse_backend
from xretrieve.errors import InputError, XRetrieveError
from xretrieve.evaluation.bootstrap import percentile_interval
from xretrieve.evaluation.config import EvaluationConfig, ModelPlan
from xretrieve.evaluation.embedding_cache import LayerEmbeddingCache
from xretrieve.evaluation.fingerprint import data_fingerprint
from xretrieve.evaluation.report import write_reports
from xretrieve.evaluation.results import (
    ERROR_METRIC,
    ResultRow,
    ResultsLog,
    SampleStore,
    finished_units,
)
from xretrieve.evaluation.tasks import ScoringSettings, Task, get_task
from xretrieve.files import atomic_write
from xretrieve.layers import LayerSpec, parse_layer_spec
from xretrieve.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    from xretrieve.encoding.encoder import Encoder
    from xretrieve.encoding.load import ModelSource

logger = logging.getLogger(__name__)

# Scored units allowed to wait for the scoring thread: bounds the embeddings held in memory.
MAX_PENDING_UNITS = 2


class EncoderFactory(Protocol):
    """``(model, layers)`` -> an encoder whose outputs are ``layers`` (None: the model's own);
    called with ``projection=True`` as well for the image-text view of a checkpoint with a
    projection head (a factory for models without one may leave ``projection`` out)."""

    def __call__(
        self, model: str, layers: tuple[int, ...] | None, projection: bool = False
    ) -> Encoder: ...


@dataclass(frozen=True)
class EvaluationSummary:
    """What a run did: ``rows`` are every current row in scope (results and errors),
    ``failures`` the error rows; counts of scored, skipped (already finished) and failed units,
    distinct texts encoded and encoder calls; ``files`` written."""

    rows: tuple[ResultRow, ...]
    failures: tuple[ResultRow, ...]
    plans: tuple[ModelPlan, ...]
    scored_units: int
    skipped_units: int
    encoded_texts: int
    forward_calls: int
    files: tuple[Path, ...]


def default_encoder_factory(
    backend: Backend, device: Device, batch_tokens: int, text_prefix: str | None = None
) -> EncoderFactory:
    """``load_encoder`` with fixed backend, device, token budget and text prefix."""

    def factory(model: str, layers: tuple[int, ...] | None, projection: bool = False) -> Encoder:
        from xretrieve.encoding import load_encoder

        return load_encoder(
            model,
            backend=backend,
            device=device,
            batch_tokens=batch_tokens,
            layers=layers,
            projection=projection,
            text_prefix=text_prefix,
        )

    return factory


def parse_layers(spec: str | None) -> LayerSpec:
    """``--layers`` of ``evaluate``: ``parse_layer_spec`` ("all", "8,12,-1", None/"")."""
    return parse_layer_spec(spec)


def _settings_id(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def plan_model(
    model: str,
    layers: LayerSpec | None,
    *,
    backend: Backend | str,
    device: Device | str,
    text_prefix: str | None = None,
) -> ModelPlan:
    """Resolve ``model`` (export or checkpoint directory, or the default model) without loading
    it: hash, layers and cache id. ``text_prefix`` overrides a checkpoint's own prefix (an
    export's is fixed). ``InputError``/``XRetrieveError`` for a bad model or layers."""
    from xretrieve.encoding.load import resolve_device, resolve_model

    layers = layers or LayerSpec()
    source = resolve_model(model)
    backend = parse_backend(backend)
    resolved_device = resolve_device(device, backend)
    if source.kind is SourceKind.EXPORT:
        return _plan_export(str(model), source, layers, backend, text_prefix)
    return _plan_checkpoint(str(model), source, layers, backend, resolved_device, text_prefix)


def _plan_export(
    model: str, source: ModelSource, layers: LayerSpec, backend: Backend, text_prefix: str | None
) -> ModelPlan:
    from exporters import read_manifest, resolve_layers

    manifest = read_manifest(source.path)
    if text_prefix is not None and text_prefix != manifest.text_prefix:
        raise XRetrieveError(
            f"{source.path} is an export with the text prefix {manifest.text_prefix!r}, not "
            f"{text_prefix!r}: pass the checkpoint directory, or export it again"
        )
    available = tuple(manifest.layers)
    if layers.every:
        wanted: tuple[int, ...] = available
    elif layers.indices is None:
        wanted = available[:1]
    else:
        wanted = resolve_layers(layers.indices, manifest.num_hidden_layers)
        absent = [layer for layer in wanted if layer not in available]
        if absent:
            raise XRetrieveError(
                f"{source.path} is an export of layers {available}; layers {absent} are not "
                "in it: pass the checkpoint directory to sweep other layers"
            )
    settings = {
        "kind": SourceKind.EXPORT.value,
        "pooling": manifest.pooling.value,
        "normalize": manifest.normalize,
        "dtype": manifest.dtype.value,
        "prefix": manifest.text_prefix,
        "max_length": manifest.max_length,
        "dim": manifest.dim,
        "extra": manifest.extra,
        "backend": backend.value,
    }
    checkpoint_hash = manifest.source_hash
    return ModelPlan(
        model=str(model),
        name=source.name,
        checkpoint_hash=checkpoint_hash,
        store_id=f"{checkpoint_hash}-{_settings_id(settings)}",
        layers=wanted,
        encoder_layers=None,
        cache_layers=available,
    )


def _plan_checkpoint(
    model: str,
    source: ModelSource,
    layers: LayerSpec,
    backend: Backend,
    resolved_device: Device,
    text_prefix: str | None,
) -> ModelPlan:
    from exporters import num_hidden_layers, read_checkpoint_config, resolve_layers
    from exporters.checkpoint import PROJECTION_INFO

    num_layers = num_hidden_layers(read_checkpoint_config(source.path))
    if layers.every:
        wanted = tuple(range(1, num_layers + 1))
    elif layers.indices is None:
        wanted = (num_layers,)
    else:
        wanted = resolve_layers(layers.indices, num_layers)
    settings = {
        "kind": SourceKind.CHECKPOINT.value,
        "pooling": "mean",
        "normalize": True,
        "dtype": "fp16" if resolved_device is Device.CUDA else "fp32",
        "prefix": source.text_prefix if text_prefix is None else text_prefix,
        "backend": backend.value,
    }
    checkpoint_hash = content_hash(source.path)
    projection_layer = projection_store_id = None
    info_path = source.path / PROJECTION_INFO
    if info_path.is_file():
        try:
            trained_layer = int(json.loads(info_path.read_text(encoding="utf-8")).get("layer", -1))
        except (ValueError, TypeError, AttributeError) as error:
            raise InputError(info_path, f"not a valid projection description: {error}") from None
        projection_layer = resolve_layers((trained_layer,), num_layers)[0]
        projection_store_id = f"{checkpoint_hash}-{_settings_id({**settings, 'projection': True})}"
    return ModelPlan(
        model=str(model),
        name=source.name,
        checkpoint_hash=checkpoint_hash,
        store_id=f"{checkpoint_hash}-{_settings_id(settings)}",
        layers=wanted,
        encoder_layers=wanted,
        cache_layers=wanted,
        projection_layer=projection_layer,
        projection_store_id=projection_store_id,
    )


def _unique_names(plans: list[ModelPlan]) -> list[ModelPlan]:
    """Disambiguate equal display names with their parent directory (then an index)."""
    from dataclasses import replace

    names = [plan.name for plan in plans]
    out = []
    for index, plan in enumerate(plans):
        name = plan.name
        if names.count(name) > 1:
            parent = Path(plan.model).parent.name
            name = f"{parent}/{name}" if parent else f"{name}#{index + 1}"
        out.append(replace(plan, name=name))
    return out


class _LazyEncoder:
    """Creates the real encoder on first use, so fully cached runs never load a model."""

    def __init__(self, factory: EncoderFactory, plan: ModelPlan, projection: bool = False) -> None:
        self._factory = factory
        self._plan = plan
        self._projection = projection
        self._encoder: Encoder | None = None
        self.name = plan.name
        self._layers = (plan.projection_layer,) if projection else plan.cache_layers

    def _get(self) -> Encoder:
        if self._encoder is None:
            if self._projection:
                self._encoder = self._factory(self._plan.model, self._layers, projection=True)
            else:
                self._encoder = self._factory(self._plan.model, self._plan.encoder_layers)
            if tuple(self._encoder.layers) != self._layers:
                logger.debug("encoder layers %s, planned %s", self._encoder.layers, self._layers)
        return self._encoder

    @property
    def dim(self) -> int:
        return self._get().dim

    @property
    def layers(self) -> tuple[int, ...]:
        return self._layers

    def encode(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> np.ndarray:
        return self._get().encode(texts, progress)

    def encode_layers(
        self, texts: Sequence[str], progress: ProgressCallback | None = None
    ) -> np.ndarray:
        return self._get().encode_layers(texts, progress)


RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunRecord:
    """What ``run.json`` holds: ``settings``, the ``ScoringSettings.to_json()`` the directory's
    results were scored with (None: no readable record), and ``data``, per unit ``task/lang``
    the ``data_fingerprint`` of the files its results were computed from."""

    settings: dict | None = None
    data: dict[str, dict] = field(default_factory=dict)


def _read_run_record(out_dir: Path) -> RunRecord:
    path = out_dir / RUN_FILE
    if not path.exists():
        return RunRecord()
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        previous = None
    if not isinstance(previous, dict):
        logger.warning("%s is not valid JSON; rows record their own settings", path)
        return RunRecord()
    data = previous.pop("data", None)
    return RunRecord(previous, data if isinstance(data, dict) else {})


def _check_run_settings(out_dir: Path, record: RunRecord, scoring: ScoringSettings) -> None:
    """Bootstrap samples and mining settings must not change under a resumed output directory
    (each row also records its settings, so a missing or damaged run.json never mixes them)."""
    if record.settings is not None and record.settings != scoring.to_json():
        raise XRetrieveError(
            f"{out_dir} holds results scored with other settings ({record.settings}); use a new "
            "--out directory, or the same settings to resume"
        )


def _record_run_settings(
    out_dir: Path, scoring: ScoringSettings, log: ResultsLog, data: dict[str, dict]
) -> None:
    """Write run.json once the directory holds a result scored with ``scoring``: a run that
    scored nothing (a bad model path, say) must not pin the settings of the next one."""
    fingerprint = scoring.fingerprint()
    if any(row.settings == fingerprint and row.metric != ERROR_METRIC for row in log.read()):
        with atomic_write(out_dir / RUN_FILE) as handle:
            json.dump({**scoring.to_json(), "data": data}, handle, indent=2, sort_keys=True)


def _unit_key(task: Task, lang: str) -> str:
    return f"{task.name}/{lang}"


def _unit_layers(plan: ModelPlan, task: Task) -> tuple[int, ...]:
    """The layers a unit of ``task`` is scored at: image-text scoring needs caption vectors in
    the image space, the projected view at the one layer the head was trained on."""
    if task.uses_projection and plan.projection_layer is not None:
        return (plan.projection_layer,)
    return plan.layers


def _unchanged_data(
    done: set[tuple[str, int, str, str]],
    recorded: dict[str, dict],
    current: dict[str, dict],
) -> set[tuple[str, int, str, str]]:
    """``done`` less the units whose files differ from those their results were computed on
    (they are scored again; the new rows supersede the old)."""
    changed = {
        key for key, fingerprint in current.items() if recorded.get(key, fingerprint) != fingerprint
    }
    for key in sorted(changed):
        logger.warning("the data of %s changed since it was scored; scoring it again", key)
    return {unit for unit in done if f"{unit[2]}/{unit[3]}" not in changed}


def _data_record(
    recorded: dict[str, dict],
    current: dict[str, dict],
    plans: Sequence[ModelPlan],
    units: Sequence[tuple[Task, str]],
    finished: set[tuple[str, int, str, str]],
) -> dict[str, dict]:
    """The ``data`` of the new run.json: the current fingerprint of each unit every model has
    finished now, the recorded one of every other (so stale rows are still detected)."""
    data = dict(recorded)
    for task, lang in units:
        if all(
            (plan.checkpoint_hash, layer, task.name, lang) in finished
            for plan in plans
            for layer in _unit_layers(plan, task)
        ):
            data[_unit_key(task, lang)] = current[_unit_key(task, lang)]
    return data


def _task_languages(
    tasks: list[Task], data_dir: Path, langs: tuple[str, ...] | None, scoring: ScoringSettings
) -> list[tuple[Task, str]]:
    units = []
    found_any: set[str] = set()
    for task in tasks:
        available = task.languages(data_dir, scoring)
        found_any.update(available)
        chosen = available if langs is None else [lang for lang in langs if lang in available]
        units.extend((task, lang) for lang in chosen)
    if langs is not None:
        unknown = [lang for lang in langs if lang not in found_any]
        if unknown:
            raise InputError(
                data_dir,
                f"no data for language(s) {', '.join(unknown)} in tasks "
                f"{', '.join(task.name for task in tasks)}",
            )
    if not units:
        raise InputError(
            data_dir, f"no data for tasks {', '.join(task.name for task in tasks)} found here"
        )
    return units


@dataclass(frozen=True)
class _Unit:
    """One (model, task, language) being scored under ``scoring``; builds its result rows."""

    plan: ModelPlan
    task: Task
    lang: str
    scoring: ScoringSettings

    def row(
        self,
        layer: int,
        metric: str,
        value: float | None,
        *,
        ci_low: float | None = None,
        ci_high: float | None = None,
        n: int | None = None,
        error: str | None = None,
    ) -> ResultRow:
        return ResultRow(
            checkpoint=self.plan.name,
            checkpoint_hash=self.plan.checkpoint_hash,
            layer=layer,
            task=self.task.name,
            lang=self.lang,
            metric=metric,
            value=value,
            ci_low=ci_low,
            ci_high=ci_high,
            n=n,
            error=error,
            settings=self.scoring.fingerprint(),
        )

    def error_row(self, layer: int, error: BaseException) -> ResultRow:
        return self.row(layer, ERROR_METRIC, None, error=_error_text(error))


def _error_text(error: BaseException) -> str:
    if isinstance(error, XRetrieveError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _log_failure(log: ResultsLog, unit: _Unit, layers: Sequence[int], error: BaseException) -> None:
    logger.error("%s %s/%s: %s", unit.plan.name, unit.task.name, unit.lang, error)
    log.append([unit.error_row(layer, error) for layer in layers])


def _score_unit(
    unit: _Unit,
    layer: int,
    data: object,
    embeddings: list[np.ndarray],
    log: ResultsLog,
    samples: SampleStore,
) -> list[ResultRow]:
    try:
        measurements = unit.task.score(data, embeddings, unit.scoring)
    except Exception as error:  # one language's failure must not stop the others
        logger.error(
            "%s layer %d %s/%s: %s", unit.plan.name, layer, unit.task.name, unit.lang, error
        )
        rows = [unit.error_row(layer, error)]
        log.append(rows)
        return rows
    rows = []
    for measurement in measurements:
        low = high = None
        if measurement.samples is not None:
            low, high = percentile_interval(measurement.samples)
        value = measurement.value
        row = unit.row(
            layer,
            measurement.metric,
            None if value is None or math.isinf(value) else float(value),
            ci_low=low,
            ci_high=high,
            n=measurement.n,
        )
        if measurement.samples is not None:
            samples.save(row, measurement.samples)
        rows.append(row)
    log.append(rows)
    return rows


@dataclass
class _Counters:
    """What a run has done so far; ``unit_finished`` reports progress."""

    total_units: int
    progress: ProgressCallback
    scored: int = 0
    skipped: int = 0
    encoded: int = 0
    calls: int = 0
    finished: int = 0

    def unit_finished(self) -> None:
        self.finished += 1
        self.progress("evaluate", self.finished, self.total_units)


@dataclass(frozen=True)
class _Run:
    """What every unit of a run shares: the config, the output logs, the finished units, the
    scoring thread and the futures it has not yet returned (bounded by MAX_PENDING_UNITS)."""

    config: EvaluationConfig
    log: ResultsLog
    samples: SampleStore
    done: set[tuple[str, int, str, str]]
    scorer: ThreadPoolExecutor
    pending: list[Future]
    counters: _Counters


@dataclass
class _Model:
    """One model's caches and, once the model itself failed (load, export, encode), the error
    every later unit of it is recorded with; the other models still run."""

    plan: ModelPlan
    text_cache: LayerEmbeddingCache
    projected_cache: LayerEmbeddingCache | None
    error: XRetrieveError | None = None

    @property
    def caches(self) -> list[LayerEmbeddingCache]:
        return [c for c in (self.text_cache, self.projected_cache) if c is not None]


def _open_model(plan: ModelPlan, factory: EncoderFactory, cache_root: Path) -> _Model:
    text_cache = LayerEmbeddingCache(
        cache_root, plan.store_id, _LazyEncoder(factory, plan), plan.cache_layers
    )
    projected_cache = None
    if plan.projection_store_id is not None:
        projected_cache = LayerEmbeddingCache(
            cache_root,
            plan.projection_store_id,
            _LazyEncoder(factory, plan, projection=True),
            (plan.projection_layer,),
        )
    return _Model(plan, text_cache, projected_cache)


def _embed_unit(run: _Run, model: _Model, cache: LayerEmbeddingCache, unit: _Unit, corpora) -> None:
    """Encode the unit's texts missing from ``cache``; a failure latches ``model.error``."""
    if model.error is not None:
        return
    stage = f"embed {model.plan.name} {unit.task.name}/{unit.lang}"
    progress = run.counters.progress
    try:
        cache.ensure(
            [text for corpus in corpora for text in corpus.texts],
            lambda _s, done_, total: progress(stage, done_, total),
        )
    except XRetrieveError as error:
        model.error = error


def _evaluate_unit(run: _Run, model: _Model, task: Task, lang: str) -> None:
    """Skip the unit's finished layers, load its data, embed it, and hand each layer's
    embeddings to the scoring thread; data or model failures become error rows."""
    plan = model.plan
    projected = task.uses_projection and model.projected_cache is not None
    cache = model.projected_cache if projected else model.text_cache
    unit_layers = _unit_layers(plan, task)
    todo = [
        layer
        for layer in unit_layers
        if (plan.checkpoint_hash, layer, task.name, lang) not in run.done
    ]
    run.counters.skipped += len(unit_layers) - len(todo)
    if not todo:
        return
    unit = _Unit(plan, task, lang, run.config.scoring)
    try:
        data = task.load(Path(run.config.data_dir), lang, run.config.scoring)
        corpora = task.corpora(data)
    except XRetrieveError as error:
        _log_failure(run.log, unit, todo, error)
        return
    _embed_unit(run, model, cache, unit, corpora)
    if model.error is not None:
        _log_failure(run.log, unit, todo, model.error)
        return
    for layer in todo:
        embeddings = [cache.embed(corpus.texts, layer) for corpus in corpora]
        run.pending.append(
            run.scorer.submit(_score_unit, unit, layer, data, embeddings, run.log, run.samples)
        )
        run.counters.scored += 1
    while len(run.pending) > MAX_PENDING_UNITS:
        run.pending.pop(0).result()


def _task_metrics(name: str) -> frozenset[str]:
    return get_task(name).metrics


def _plans(config: EvaluationConfig) -> list[ModelPlan]:
    models = list(config.models)
    if config.baseline is not None and config.baseline not in models:
        models.insert(0, config.baseline)
    return _unique_names(
        [
            plan_model(
                m,
                config.layers,
                backend=config.backend,
                device=config.device,
                text_prefix=config.text_prefix,
            )
            for m in models
        ]
    )


def evaluate(
    config: EvaluationConfig,
    *,
    encoder_factory: EncoderFactory | None = None,
    progress: ProgressCallback | None = None,
) -> EvaluationSummary:
    """Evaluate ``config.models`` on ``config.tasks``; see the module docstring.

    Raises ``XRetrieveError`` for problems with the whole run (no data, a bad model, changed
    settings in ``out_dir``); a language's missing or bad data is recorded as an error row.
    Results of a unit whose files changed since they were scored (``run.json`` records their
    sizes and hashes) are scored again."""
    progress = progress or no_progress
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = _read_run_record(out_dir)
    _check_run_settings(out_dir, record, config.scoring)
    data_dir = Path(config.data_dir)
    tasks = [get_task(name) for name in config.tasks]
    units = _task_languages(tasks, data_dir, config.langs, config.scoring)
    plans = _plans(config)
    factory = encoder_factory or default_encoder_factory(
        config.backend, config.device, config.batch_tokens, config.text_prefix
    )
    cache_root = config.cache_root or cache_dir() / "embeddings"
    log = ResultsLog(out_dir / "results.jsonl")
    fingerprints = {
        _unit_key(task, lang): data_fingerprint(
            task.files(data_dir, lang, config.scoring), data_dir
        )
        for task, lang in units
    }
    done = finished_units(log.read(), _task_metrics, config.scoring.fingerprint())
    done = _unchanged_data(done, record.data, fingerprints)
    counters = _Counters(len(plans) * len(units), progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="xretrieve-score") as scorer:
        run = _Run(config, log, SampleStore(out_dir / "bootstrap"), done, scorer, [], counters)
        for plan in plans:
            model = _open_model(plan, factory, cache_root)
            for task, lang in units:
                _evaluate_unit(run, model, task, lang)
                counters.unit_finished()
            counters.encoded += sum(c.encoded_texts for c in model.caches)
            counters.calls += sum(c.forward_calls for c in model.caches)
        for future in run.pending:
            future.result()

    finished = finished_units(log.read(), _task_metrics, config.scoring.fingerprint())
    data = _data_record(record.data, fingerprints, plans, units, finished)
    _record_run_settings(out_dir, config.scoring, log, data)
    files, rows = write_reports(out_dir, config, plans, tasks)
    return EvaluationSummary(
        rows=tuple(rows),
        failures=tuple(row for row in rows if row.metric == ERROR_METRIC),
        plans=tuple(plans),
        scored_units=counters.scored,
        skipped_units=counters.skipped,
        encoded_texts=counters.encoded,
        forward_calls=counters.calls,
        files=tuple(files),
    )
