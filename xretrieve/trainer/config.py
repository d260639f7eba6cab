"""Training configuration: frozen dataclasses loaded from a TOML or YAML file.

Every setting has a default except the task list. Unknown keys are errors naming the key, so a typo
never silently falls back to a default. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xretrieve.core.errors import InputError, MissingDependencyError
from xretrieve.core.settings import Backend
from xretrieve.evaluation.metrics import MLQA_NORMALIZERS, AnswerNormalization
from xretrieve.trainer.presets import PRESETS
from xretrieve.trainer.task_type import TaskType


class SamplingStrategy(str, enum.Enum):
    """How the next batch's task is drawn: by size, uniformly, or by size**(1/temperature)."""

    PROPORTIONAL = "proportional"
    UNIFORM = "uniform"
    TEMPERATURE = "temperature"


class SamplingUnit(str, enum.Enum):
    """What one task draw feeds: each micro-batch (tasks mix within an optimizer step), or a
    whole optimizer step (all its ``grad_accum`` micro-batches from one task, as jiant does)."""

    MICRO_BATCH = "micro_batch"
    OPTIMIZER_STEP = "optimizer_step"


class Precision(str, enum.Enum):
    """AUTO is bf16 autocast on a GPU that supports it (else fp16), fp32 on CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


@dataclass(frozen=True)
class TaskConfig:
    """One training task. ``fields`` override the preset's field names (dotted paths reach into
    nested records, e.g. ``question.stem``); ``labels`` fix the label set and its order."""

    name: str
    type: TaskType
    train_files: tuple[Path, ...]
    validation: Path | None = None
    # zero-shot cross-lingual evaluation: language code -> validation file (instead of validation)
    validation_languages: Mapping[str, Path] = field(default_factory=dict)
    preset: str | None = None
    fields: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    max_length: int | None = None
    batch_size: int | None = None
    loss_weight: float = 1.0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    # extractive QA
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    allow_unanswerable: bool | None = None
    # how validation answers are normalised: SQuAD's script, or MLQA's per validation language
    answer_normalization: AnswerNormalization = AnswerNormalization.SQUAD
    # image-text alignment: the gallery's images.npy (image_ids.txt beside it names its rows);
    # default: images.npy in the folder of the first training file
    image_features: Path | None = None
    # masked language modelling
    mlm_probability: float = 0.15
    # files holding several languages (a language column, XNLI's all_languages): the one read;
    # "all" reads every row. Validation tables of language -> file choose by their keys.
    language: str | None = None
    # TSV/CSV rows whose column count differs from the header's are skipped and counted (as
    # TFDS's GLUE does) instead of stopping the run
    skip_malformed: bool = False

    @property
    def train(self) -> Path:
        """The first training file (the one errors about the task as a whole name)."""
        return self.train_files[0]


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then linear decay to zero at ``max_steps``. ``batch_size`` is per
    micro-batch; an optimizer step sees ``batch_size * grad_accum`` examples. ``epochs`` (instead
    of ``max_steps``) sets the run length from the data: one epoch is as many micro-batches as a
    pass over every task's (capped) training set takes, ``sum_i ceil(n_i / batch_i)``, divided by
    ``grad_accum`` and rounded up (see ``Trainer``)."""

    max_steps: int = 1000
    epochs: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    learning_rate: float = 2e-5
    head_learning_rate: float | None = None
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    max_grad_norm: float | None = 1.0
    precision: Precision = Precision.AUTO


@dataclass(frozen=True)
class SamplingConfig:
    """Task sampling: sizes are capped at ``cap`` examples before the strategy is applied.
    ``group_by_length`` makes each batch of similar-length examples (less padding; see
    ``sampling.length_grouped``)."""

    strategy: SamplingStrategy = SamplingStrategy.PROPORTIONAL
    temperature: float = 2.0
    cap: int | None = None
    per: SamplingUnit = SamplingUnit.MICRO_BATCH
    group_by_length: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation, checkpointing, keep-best and early stopping. ``metric`` is "mean" (the mean of
    every task's main metric) or "TASK/METRIC", e.g. "mnli/accuracy"; higher is better unless
    ``greater_is_better`` is false. ``patience`` counts evaluations without improvement."""

    eval_every: int = 500
    save_every: int | None = None
    eval_batch_size: int = 64
    metric: str = "mean"
    greater_is_better: bool = True
    keep_best: bool = True
    keep_last: int = 2
    patience: int | None = None
    log_every: int = 10


@dataclass(frozen=True)
class RetrievalEvalConfig:
    """Cross-lingual retrieval of every saved checkpoint with the toolkit's own export and
    evaluation path: Tatoeba accuracy and BUCC F1 for the listed languages under ``data_dir``.
    ``layers`` are hidden-state indices as ``xretrieve evaluate --layers`` takes them (-1 = last;
    XTREME scores XLM-R large at layer 14 of 24); default: the last layer."""

    data_dir: Path
    tatoeba: tuple[str, ...] = ()
    bucc: tuple[str, ...] = ()
    bucc_tune_split: str = "dev"
    bucc_eval_split: str = "dev"
    backend: Backend = Backend.ORT
    batch_tokens: int = 16384
    layers: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A whole run. ``base`` is a local Hugging Face checkpoint directory (None: the toolkit's
    default model). ``compile`` runs the training forward and backward through
    ``torch.compile`` (dynamic shapes; evaluation and saving use the plain module)."""

    tasks: tuple[TaskConfig, ...]
    base: Path | None = None
    output_dir: Path = Path("runs/train")
    seed: int = 42
    max_length: int = 128
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    retrieval: RetrievalEvalConfig | None = None
    compile: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict of every setting (paths as strings, enums as values)."""
        return _jsonable(dataclasses.asdict(self))

    def input_paths(self) -> list[Path]:
        """Every file and folder the run reads: ``base``, each task's training, validation and
        image-feature files, the retrieval data folder (what ``output_dir`` must not be, hold or
        lie inside)."""
        paths = [] if self.base is None else [self.base]
        for task in self.tasks:
            paths += [*task.train_files, *task.validation_languages.values()]
            paths += [path for path in (task.validation, task.image_features) if path is not None]
            if task.image_features is not None:
                paths.append(task.image_features.with_name("image_ids.txt"))
        if self.retrieval is not None:
            paths.append(self.retrieval.data_dir)
        return paths


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


_PATH_KEYS = {"train", "validation", "image_features", "base", "output_dir", "data_dir"}


def load_config(path: Path | str) -> TrainConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a TrainConfig."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise InputError(path, f"cannot read config: {error.strerror}") from None
    if path.suffix == ".toml":
        raw = _parse_toml(path, text)
    elif path.suffix in (".yaml", ".yml"):
        raw = _parse_yaml(path, text)
    else:
        raise InputError(path, "config must be a .toml, .yaml or .yml file")
    if not isinstance(raw, dict):
        raise InputError(path, "config must be a table/mapping at the top level")
    return config_from_dict(raw, source=path)


def _parse_toml(path: Path, text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise MissingDependencyError("tomli", "Reading TOML configs on Python 3.10") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(path, f"invalid TOML: {error}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "Reading YAML configs") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        raise InputError(
            path, f"invalid YAML: {error}", None if line is None else line + 1
        ) from None


def config_from_dict(raw: Mapping[str, Any], source: Path | None = None) -> TrainConfig:
    """Build a TrainConfig from parsed TOML/YAML; ``source`` is the file (for errors and for
    resolving relative paths; without it paths are taken as given)."""
    root = source.resolve().parent if source is not None else None
    top = _Section(raw, "", source, root)
    tasks_raw = top.pop("tasks", None)
    if not tasks_raw or not isinstance(tasks_raw, list):
        raise InputError(source, "config needs at least one [[tasks]] entry")
    tasks = tuple(
        _task(_Section(item, f"tasks[{i}].", source, root), i) for i, item in enumerate(tasks_raw)
    )
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(source, f"task names must be unique; repeated: {', '.join(duplicates)}")
    optim = _optim(top.section("optim"))
    sampling = _sampling(top.section("sampling"))
    evaluation = _evaluation(top.section("evaluation"))
    retrieval_raw = top.pop("retrieval_eval", None)
    retrieval = None
    if retrieval_raw is not None:
        retrieval = _retrieval(_Section(retrieval_raw, "retrieval_eval.", source, root))
    base = top.path("base")
    default_out = Path("runs") / (source.stem if source is not None else "train")
    output_dir = top.path("output_dir") or top.resolve(default_out)
    config = TrainConfig(
        tasks=tasks,
        base=base,
        output_dir=output_dir,
        seed=top.integer("seed", 42),
        max_length=top.integer("max_length", 128, minimum=8),
        optim=optim,
        sampling=sampling,
        evaluation=evaluation,
        retrieval=retrieval,
        compile=top.boolean("compile", False),
    )
    top.finish()
    if evaluation.metric != "mean":
        task_name, _, metric = evaluation.metric.partition("/")
        if task_name not in names or not metric:
            raise InputError(
                source,
                f"evaluation.metric '{evaluation.metric}' must be 'mean' or 'TASK/METRIC' with "
                f"TASK one of: {', '.join(names)}",
            )
        chosen = tasks[names.index(task_name)]
        if chosen.validation is None and not chosen.validation_languages:
            raise InputError(
                source,
                f"evaluation.metric '{evaluation.metric}' needs a validation file for task "
                f"'{task_name}'",
            )
    return config


class _Section:
    """A mapping being consumed key by key; ``finish`` reports keys nobody asked for."""

    def __init__(self, raw: Any, prefix: str, source: Path | None, root: Path | None) -> None:
        if not isinstance(raw, Mapping):
            raise InputError(source, f"'{prefix.rstrip('.') or 'config'}' must be a table/mapping")
        self.values = dict(raw)
        self.prefix = prefix
        self.source = source
        self.root = root

    def error(self, key: str, message: str) -> InputError:
        return InputError(self.source, f"'{self.prefix}{key}': {message}")

    def pop(self, key: str, default: Any = None) -> Any:
        return self.values.pop(key, default)

    def section(self, key: str) -> _Section:
        return _Section(self.pop(key, {}) or {}, f"{self.prefix}{key}.", self.source, self.root)

    def finish(self) -> None:
        if self.values:
            unknown = ", ".join(f"'{self.prefix}{key}'" for key in sorted(self.values))
            raise InputError(self.source, f"unknown config key(s): {unknown}")

    def resolve(self, value: Path) -> Path:
        value = value.expanduser()
        if self.root is not None and not value.is_absolute():
            return self.root / value
        return value

    def path(self, key: str) -> Path | None:
        value = self.pop(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty path string")
        return self.resolve(Path(value))

    def paths(self, key: str) -> tuple[Path, ...]:
        """One path string or a list of them (e.g. ANLI's train file of each round)."""
        value = self.pop(key)
        if value is None:
            return ()
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and v for v in values):
            raise self.error(key, "must be a non-empty path string or a list of them")
        return tuple(self.resolve(Path(v)) for v in values)

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.pop(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        return value

    def integer(self, key: str, default: int | None, minimum: int | None = None) -> int | None:
        value = self.pop(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float | None, minimum: float | None = None) -> float | None:
        value = self.pop(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool | None) -> bool | None:
        value = self.pop(key, default)
        if value is not None and not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.pop(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise self.error(key, "must be a list of strings")
        return tuple(str(v) for v in value)

    def choice(self, key: str, enum_type: type[enum.Enum], default: enum.Enum) -> Any:
        value = self.pop(key, default.value)
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum_type)
            raise self.error(key, f"must be one of {allowed}, got {value!r}") from None


def _task(section: _Section, index: int) -> TaskConfig:
    preset = section.string("preset")
    if preset is not None and preset not in PRESETS:
        raise section.error("preset", f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    type_value = section.pop("type")
    if type_value is None:
        if preset is None:
            raise section.error("type", "each task needs a 'type' or a 'preset'")
        task_type = PRESETS[preset].type
    else:
        try:
            task_type = TaskType(type_value)
        except ValueError:
            allowed = ", ".join(member.value for member in TaskType)
            raise section.error("type", f"must be one of {allowed}, got {type_value!r}") from None
        if preset is not None and PRESETS[preset].type is not task_type:
            raise section.error("type", f"preset {preset!r} is a {PRESETS[preset].type.value} task")
    name = section.string("name") or preset or f"task{index}"
    train = section.paths("train")
    if not train:
        raise section.error("train", "each task needs a training data file (or a list of them)")
    fields_raw = section.pop("fields", {}) or {}
    if not isinstance(fields_raw, Mapping):
        raise section.error("fields", "must be a table of field names")
    fields: dict[str, str | tuple[str, ...]] = {}
    for key, value in fields_raw.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            fields[key] = tuple(value)
        elif isinstance(value, str):
            fields[key] = value
        else:
            raise section.error(f"fields.{key}", "must be a field name or a list of field names")
    image_features = section.path("image_features")
    validation, languages = _validation(section)
    task = TaskConfig(
        name=name,
        type=task_type,
        train_files=train,
        validation=validation,
        validation_languages=languages,
        preset=preset,
        fields=fields,
        labels=section.strings("labels"),
        max_length=section.integer("max_length", None, minimum=8),
        batch_size=section.integer("batch_size", None, minimum=1),
        loss_weight=section.number("loss_weight", 1.0, minimum=0.0),
        max_train_examples=section.integer("max_train_examples", None, minimum=1),
        max_eval_examples=section.integer("max_eval_examples", None, minimum=1),
        doc_stride=section.integer("doc_stride", 128, minimum=1),
        max_query_length=section.integer("max_query_length", 64, minimum=1),
        max_answer_length=section.integer("max_answer_length", 30, minimum=1),
        allow_unanswerable=section.boolean("allow_unanswerable", None),
        answer_normalization=section.choice(
            "answer_normalization", AnswerNormalization, AnswerNormalization.SQUAD
        ),
        image_features=image_features,
        mlm_probability=section.number("mlm_probability", 0.15, minimum=0.0),
        language=section.string("language"),
        skip_malformed=section.boolean("skip_malformed", False),
    )
    section.finish()
    _check_answer_normalization(section, task)
    if task_type is TaskType.IMAGE_TEXT:
        task = _image_text_task(section, task)
    return task


def _image_text_task(section: _Section, task: TaskConfig) -> TaskConfig:
    """The gallery defaults to ``images.npy`` beside the first training file (the image-text
    layout's ``DIR/image_text/``); ``fields.image``, the old layout's row number, is refused."""
    if "image" in task.fields:
        raise section.error(
            "fields.image",
            "captions name their image by id now (a line of image_ids.txt beside the "
            "features; see docs/multimodal.md): use fields.image_id",
        )
    if task.image_features is None:
        task = dataclasses.replace(task, image_features=task.train.parent / "images.npy")
    return task


def _check_answer_normalization(section: _Section, task: TaskConfig) -> None:
    """MLQA's normalisation is per language: each validation language (a table's key, else the
    task's ``language``) must be one of MLQA's."""
    if task.answer_normalization is not AnswerNormalization.MLQA:
        return
    if task.type is not TaskType.EXTRACTIVE_QA:
        raise section.error("answer_normalization", "applies to extractive_qa tasks only")
    wanted = list(task.validation_languages) or [task.language]
    unknown = [str(lang) for lang in wanted if lang not in MLQA_NORMALIZERS]
    if unknown:
        raise section.error(
            "answer_normalization",
            f"'mlqa' normalises per answer language, one of {', '.join(MLQA_NORMALIZERS)}; "
            f"the validation language{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} {'are' if len(unknown) > 1 else 'is'} none "
            "(name it with the task's language or a validation table)",
        )


def _validation(section: _Section) -> tuple[Path | None, dict[str, Path]]:
    """``validation`` is one file, or a table of language code -> file."""
    raw = section.pop("validation")
    if not isinstance(raw, Mapping):
        if raw is not None:
            section.values["validation"] = raw
        return section.path("validation"), {}
    if not raw:
        raise section.error("validation", "a table of languages needs at least one entry")
    languages = {}
    for lang, value in raw.items():
        if not isinstance(value, str) or not value:
            raise section.error(f"validation.{lang}", "must be a non-empty path string")
        languages[str(lang)] = section.resolve(Path(value))
    return None, languages


def _optim(section: _Section) -> OptimConfig:
    betas = section.pop("betas", [0.9, 0.999])
    if (
        not isinstance(betas, list | tuple)
        or len(betas) != 2
        or not all(
            isinstance(beta, int | float) and not isinstance(beta, bool) and 0 <= beta < 1
            for beta in betas
        )
    ):
        raise section.error("betas", f"must be a list of two numbers in [0, 1), got {betas!r}")
    epochs = section.number("epochs", None, minimum=0.0)
    if epochs is not None and "max_steps" in section.values:
        raise section.error("epochs", "give max_steps or epochs, not both")
    if epochs is not None and epochs <= 0:
        raise section.error("epochs", f"must be > 0, got {epochs}")
    optim = OptimConfig(
        max_steps=section.integer("max_steps", 1000, minimum=1),
        epochs=epochs,
        batch_size=section.integer("batch_size", 32, minimum=1),
        grad_accum=section.integer("grad_accum", 1, minimum=1),
        learning_rate=section.number("learning_rate", 2e-5, minimum=0.0),
        head_learning_rate=section.number("head_learning_rate", None, minimum=0.0),
        weight_decay=section.number("weight_decay", 0.01, minimum=0.0),
        betas=(float(betas[0]), float(betas[1])),
        eps=section.number("eps", 1e-8, minimum=0.0),
        warmup_ratio=section.number("warmup_ratio", 0.1, minimum=0.0),
        warmup_steps=section.integer("warmup_steps", None, minimum=0),
        max_grad_norm=section.number("max_grad_norm", 1.0, minimum=0.0),
        precision=section.choice("precision", Precision, Precision.AUTO),
    )
    section.finish()
    return optim


def _sampling(section: _Section) -> SamplingConfig:
    sampling = SamplingConfig(
        strategy=section.choice("strategy", SamplingStrategy, SamplingStrategy.PROPORTIONAL),
        temperature=section.number("temperature", 2.0, minimum=1e-6),
        cap=section.integer("cap", None, minimum=1),
        per=section.choice("per", SamplingUnit, SamplingUnit.MICRO_BATCH),
        group_by_length=section.boolean("group_by_length", False),
    )
    section.finish()
    return sampling


def _evaluation(section: _Section) -> EvalConfig:
    evaluation = EvalConfig(
        eval_every=section.integer("eval_every", 500, minimum=1),
        save_every=section.integer("save_every", None, minimum=1),
        eval_batch_size=section.integer("eval_batch_size", 64, minimum=1),
        metric=section.string("metric", "mean"),
        greater_is_better=section.boolean("greater_is_better", True),
        keep_best=section.boolean("keep_best", True),
        keep_last=section.integer("keep_last", 2, minimum=1),
        patience=section.integer("patience", None, minimum=1),
        log_every=section.integer("log_every", 10, minimum=1),
    )
    section.finish()
    return evaluation


def _retrieval(section: _Section) -> RetrievalEvalConfig:
    data_dir = section.path("data_dir")
    if data_dir is None:
        raise section.error("data_dir", "retrieval_eval needs the data folder")
    retrieval = RetrievalEvalConfig(
        data_dir=data_dir,
        tatoeba=section.strings("tatoeba") or (),
        bucc=section.strings("bucc") or (),
        bucc_tune_split=section.string("bucc_tune_split", "dev"),
        bucc_eval_split=section.string("bucc_eval_split", "dev"),
        backend=section.choice("backend", Backend, Backend.ORT),
        batch_tokens=section.integer("batch_tokens", 16384, minimum=1),
        layers=_layers(section),
    )
    section.finish()
    if not retrieval.tatoeba and not retrieval.bucc:
        raise section.error("tatoeba", "retrieval_eval needs tatoeba and/or bucc languages")
    return retrieval


def _layers(section: _Section) -> tuple[int, ...] | None:
    value = section.pop("layers")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or len(set(value)) != len(value)
    ):
        raise section.error(
            "layers", f"must be distinct layer numbers like [14, -1], got {value!r}"
        )
    return tuple(value)


def dump_config(config: TrainConfig) -> str:
    """The resolved config as JSON text (saved in every checkpoint)."""
    return json.dumps(config.to_json(), indent=2, ensure_ascii=False)


def task_config_from_json(raw: Mapping[str, Any], source: Path | None = None) -> TaskConfig:
    """A ``TaskConfig`` back from its ``TrainConfig.to_json()`` form (one entry of ``tasks`` in a
    checkpoint's ``train_config.json``): paths, enums and tuples restored. Keys this version does
    not know (a newer xretrieve's) are left out; a missing ``name``, ``type`` or ``train_files``
    is an ``InputError`` naming ``source``."""
    known = {f.name for f in dataclasses.fields(TaskConfig)}
    missing = [key for key in ("name", "type", "train_files") if key not in raw]
    if missing:
        raise InputError(source, f"a task entry lacks {', '.join(missing)}")

    def optional_path(value: Any) -> Path | None:
        return None if value is None else Path(value)

    converters: dict[str, Any] = {
        "type": TaskType,
        "train_files": lambda v: tuple(Path(p) for p in v),
        "validation": optional_path,
        "image_features": optional_path,
        "validation_languages": lambda v: {str(k): Path(p) for k, p in v.items()},
        "fields": lambda v: {k: tuple(f) if isinstance(f, list) else f for k, f in v.items()},
        "labels": lambda v: None if v is None else tuple(str(x) for x in v),
        "answer_normalization": AnswerNormalization,
    }
    values = {}
    try:
        for key, value in raw.items():
            if key in known:
                values[key] = converters.get(key, lambda v: v)(value)
        return TaskConfig(**values)
    except (TypeError, ValueError, AttributeError) as error:
        raise InputError(source, f"not a task of a training config: {error}") from None
