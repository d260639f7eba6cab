"""``evaluate``: checkpoints -> results.jsonl, results.csv, leaderboard.md, plots.

Before anything is written, the output directory goes through the shared output guard
(``output.RESULTS_OUTPUT``), the data directory is searched for the tasks and languages asked for,
and every model is planned. For each model the runner

1. plans: its ``store_id`` (the hash of its weights and of every setting that changes its
   vectors: the key of its cached embeddings and of its result rows), the layers to score
   (``plan_model``);
2. skips units (model, layer, task, language) already in ``results.jsonl``, scored with the same
   settings on the same data (each row records the hash of its unit's files) (resume);
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from xretrieve.core.cache import cache_dir, content_hash
from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.files import atomic_write
from xretrieve.core.outputs import check_output_path
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.readers import read_json_object
from xretrieve.core.settings import (
    Backend,
    Device,
    Pooling,
    SourceKind,
    dtype_on,
    parse_backend,
    parse_device,
)
from xretrieve.encoding.layers import LayerSpec, parse_layer_spec
from xretrieve.evaluation.bootstrap import percentile_interval
from xretrieve.evaluation.config import EvaluationConfig, ModelPlan
from xretrieve.evaluation.embedding_cache import LayerEmbeddingCache
from xretrieve.evaluation.fingerprint import data_hash
from xretrieve.evaluation.output import BOOTSTRAP_DIR, RESULTS_FILE, RESULTS_OUTPUT, RUN_FILE
from xretrieve.evaluation.report import write_reports
from xretrieve.evaluation.results import (
    ERROR_METRIC,
    ResultRow,
    ResultsLog,
    SampleStore,
    finished_units,
)
from xretrieve.evaluation.tasks import EvaluationTask, ScoringSettings, get_task

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
    """The ``layers`` text of ``evaluate``: ``parse_layer_spec`` ("all", "8,12,-1", None/"")."""
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
    from xretrieve.encoding.load import resolve_model, usable_device

    layers = layers or LayerSpec()
    source = resolve_model(model)
    backend = parse_backend(backend)
    resolved_device = usable_device(parse_device(device), backend)
    if source.kind is SourceKind.EXPORT:
        return _plan_export(str(model), source, layers, backend, text_prefix)
    return _plan_checkpoint(str(model), source, layers, backend, resolved_device, text_prefix)


# Manifest entries that do not change an export's vectors: where and when it was made, how its
# validation and dtype choice went, the mining threshold calibrated on it. Every other entry
# (dtype, pooling, layers, prefix, max length, projection, opset, fusions, packing, versions,
# any future one) is part of the export's ``store_id``.
_NOT_VECTOR_SETTINGS = frozenset(
    {"source_checkpoint", "created", "validation", "dtype_choice", "mining_threshold"}
)


def _file_sizes(directory: Path, names: Sequence[str]) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for name in names:
        try:
            sizes[name] = (Path(directory) / name).stat().st_size
        except OSError:
            sizes[name] = None
    return sizes


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
        "manifest": {
            key: value
            for key, value in manifest.to_json().items()
            if key not in _NOT_VECTOR_SETTINGS
        },
        "onnx_bytes": _file_sizes(source.path, manifest.onnx_files),
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
        "pooling": Pooling.MEAN.value,
        "normalize": True,
        "dtype": dtype_on(resolved_device, backend).value,
        "prefix": source.text_prefix if text_prefix is None else text_prefix,
        "backend": backend.value,
    }
    checkpoint_hash = content_hash(source.path)
    projection_layer = projection_store_id = None
    info_path = source.path / PROJECTION_INFO
    if info_path.is_file():
        try:
            trained_layer = int(read_json_object(info_path).get("layer", -1))
        except (ValueError, TypeError) as error:
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


def _read_run_settings(out_dir: Path) -> dict | None:
    """The ``ScoringSettings.to_json()`` that ``run.json`` records for the directory's results
    (None: no readable record). A ``data`` entry of older versions is ignored: each row now
    records the hash of its data."""
    path = out_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        previous = read_json_object(path)
    except InputError as error:
        logger.warning("%s; rows record their own settings", error)
        return None
    previous.pop("data", None)
    return previous


def _check_run_settings(out_dir: Path, recorded: dict | None, scoring: ScoringSettings) -> None:
    """Bootstrap samples and mining settings must not change under a resumed output directory
    (each row also records its settings, so a missing or damaged run.json never mixes them)."""
    if recorded is not None and recorded != scoring.to_json():
        raise InputError(
            out_dir,
            f"holds results scored with other settings ({recorded}); use a new {{out_dir}} "
            "directory, or the same settings to resume",
            arguments=("out_dir",),
        )


def _record_run_settings(out_dir: Path, scoring: ScoringSettings, log: ResultsLog) -> None:
    """Write run.json once the directory holds a result scored with ``scoring``: a run that
    scored nothing (a bad model path, say) must not pin the settings of the next one."""
    fingerprint = scoring.fingerprint()
    if any(row.settings == fingerprint and row.metric != ERROR_METRIC for row in log.read()):
        with atomic_write(out_dir / RUN_FILE) as handle:
            json.dump(scoring.to_json(), handle, indent=2, sort_keys=True)


def _unit_layers(plan: ModelPlan, task: EvaluationTask) -> tuple[int, ...]:
    """The layers a unit of ``task`` is scored at: image-text scoring needs caption vectors in
    the image space, the projected view at the one layer the head was trained on."""
    if task.uses_projection and plan.projection_layer is not None:
        return (plan.projection_layer,)
    return plan.layers


def _task_languages(
    config: EvaluationConfig, tasks: list[EvaluationTask]
) -> list[tuple[EvaluationTask, str]]:
    """The (task, language) units ``config`` asks for that ``config.data_dir`` holds;
    ``InputError`` for a language asked for that no task has, or no data at all (saying where
    the data comes from and how to try the bundled sample)."""
    data_dir, langs, scoring = Path(config.data_dir), config.langs, config.scoring
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
        raise InputError(data_dir, _no_data_message(config, tasks), arguments=_SAMPLE_ARGUMENTS)
    return units


# The parameters ``_no_data_message`` names.
_SAMPLE_ARGUMENTS = ("data_dir", "out_dir", "tasks", "bucc_tune_split", "bucc_eval_split")


def _no_data_message(config: EvaluationConfig, tasks: list[EvaluationTask]) -> str:
    """Where each task's files are looked for, where they come from, and the settings (the
    command, for the CLI) that evaluate the same models on the bundled BUCC sample."""
    import shlex

    from xretrieve.mining.bitext import SAMPLE_SPLIT, sample_data_dir

    scoring = config.scoring
    wanted = {
        "bucc": "BUCC 2018 (comparable.limsi.fr/bucc2018) as bucc2018/{xx}-en.{split}.{xx,en,gold} "
        f"with {{bucc_tune_split={scoring.bucc_tune_split!r}}} and "
        f"{{bucc_eval_split={scoring.bucc_eval_split!r}}}",
        "tatoeba": "Tatoeba (XTREME's copy of LASER's) as tatoeba/tatoeba.{xxx}-eng.{xxx,eng}",
        "image-text": "image-text as image_text/images.npy, image_ids.txt, "
        "captions.{lang}.test.jsonl (or captions.{lang}.jsonl)",
    }
    looked_for = "; ".join(wanted.get(task.name, task.name) for task in tasks)
    models = " ".join(shlex.quote(model) for model in config.models)
    sample = str(sample_data_dir())
    return (
        f"no data for tasks {', '.join(task.name for task in tasks)} in this directory; evaluate "
        f"reads {looked_for}. google-research/xtreme's scripts/download_data.sh leaves bucc2018/ "
        "and tatoeba/ in its download/ folder: give that folder as {data_dir} (its BUCC splits "
        "are dev, with gold, and test, without: pass {bucc_tune_split='dev'} "
        "{bucc_eval_split='dev'}). To try evaluate on the bundled de-en sample: xretrieve "
        f"evaluate {models} {{data_dir={sample!r}}} {{out_dir='evaluate-sample'}} "
        f"{{tasks=('bucc',)}} {{bucc_tune_split={SAMPLE_SPLIT!r}}} "
        f"{{bucc_eval_split={SAMPLE_SPLIT!r}}}"
    )


@dataclass(frozen=True)
class _Unit:
    """One (model, task, language) being scored under ``scoring``; builds its result rows."""

    plan: ModelPlan
    task: EvaluationTask
    lang: str
    scoring: ScoringSettings
    data_hash: str

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
            store_id=self.plan.store_id,
            data_hash=self.data_hash,
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
    """What every unit of a run shares: the config, the output logs, the hash of each (task,
    language)'s data, the finished units, the scoring thread and the futures it has not yet
    returned (bounded by MAX_PENDING_UNITS)."""

    config: EvaluationConfig
    log: ResultsLog
    samples: SampleStore
    data_hashes: dict[tuple[str, str], str]
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


def _evaluate_unit(run: _Run, model: _Model, task: EvaluationTask, lang: str) -> None:
    """Skip the unit's finished layers, load its data, embed it, and hand each layer's
    embeddings to the scoring thread; data or model failures become error rows."""
    plan = model.plan
    projected = task.uses_projection and model.projected_cache is not None
    cache = model.projected_cache if projected else model.text_cache
    unit_layers = _unit_layers(plan, task)
    todo = [
        layer for layer in unit_layers if (plan.store_id, layer, task.name, lang) not in run.done
    ]
    run.counters.skipped += len(unit_layers) - len(todo)
    if not todo:
        return
    unit = _Unit(plan, task, lang, run.config.scoring, run.data_hashes[(task.name, lang)])
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


def _input_paths(config: EvaluationConfig, cache_root: Path) -> list[Path]:
    """What ``evaluate`` reads, which ``--out`` may not be, hold or lie inside: the data
    directory, every model given as a directory, the embedding cache."""
    models = [*config.models, *([config.baseline] if config.baseline is not None else [])]
    paths = [Path(model) for model in models if Path(model).exists()]
    return [Path(config.data_dir), *paths, Path(cache_root)]


def evaluate(
    config: EvaluationConfig,
    *,
    encoder_factory: EncoderFactory | None = None,
    progress: ProgressCallback | None = None,
) -> EvaluationSummary:
    """Evaluate ``config.models`` on ``config.tasks``; see the module docstring.

    Raises ``XRetrieveError`` for problems with the whole run (an output that may not be
    written, no data, a bad model, changed settings in ``out_dir``), all before anything is
    written; a language's missing or bad data is recorded as an error row. Results of a unit
    whose files changed since they were scored (each row records their hash) are scored
    again."""
    progress = progress or no_progress
    out_dir = Path(config.out_dir)
    cache_root = config.cache_root or cache_dir() / "embeddings"
    check_output_path(
        out_dir,
        directory=True,
        option="out_dir",
        inputs=_input_paths(config, cache_root),
        owner=RESULTS_OUTPUT,
    )
    _check_run_settings(out_dir, _read_run_settings(out_dir), config.scoring)
    data_dir = Path(config.data_dir)
    tasks = [get_task(name) for name in config.tasks]
    units = _task_languages(config, tasks)
    plans = _plans(config)
    factory = encoder_factory or default_encoder_factory(
        config.backend, config.device, config.batch_tokens, config.text_prefix
    )
    data_hashes = {
        (task.name, lang): data_hash(task.files(data_dir, lang, config.scoring), data_dir)
        for task, lang in units
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out_dir / RESULTS_FILE)
    done = finished_units(log.read(), _task_metrics, config.scoring.fingerprint(), data_hashes)
    counters = _Counters(len(plans) * len(units), progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="xretrieve-score") as scorer:
        samples = SampleStore(out_dir / BOOTSTRAP_DIR)
        run = _Run(config, log, samples, data_hashes, done, scorer, [], counters)
        for plan in plans:
            model = _open_model(plan, factory, cache_root)
            for task, lang in units:
                _evaluate_unit(run, model, task, lang)
                counters.unit_finished()
            counters.encoded += sum(c.encoded_texts for c in model.caches)
            counters.calls += sum(c.forward_calls for c in model.caches)
        for future in run.pending:
            future.result()

    _record_run_settings(out_dir, config.scoring, log)
    files, rows = write_reports(out_dir, config, plans, tasks, data_hashes)
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
