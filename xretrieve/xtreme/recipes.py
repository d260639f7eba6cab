"""How each target task is fine-tuned (``FineTuneRecipe``) or embedded (``RetrievalRecipe``) in
phase 3, as presets with the source of every value, and their overrides from a TOML file.

Presets (``PRESETS``):

- ``jiant`` (the default): jiant's XTREME benchmark scripts
  (``jiant/scripts/benchmarks/xtreme/subscripts/{c_tokenize_and_cache,d_write_configs,
  e_run_models}.sh`` and ``xtreme_runconfig_writer.py``), which Phang et al. (2020) ran:
  epochs (XNLI on MNLI 2, PAWS-X 5, UD-POS and PAN-X 10, QA 2), 4 examples x 8 accumulated
  steps = 32 a step (QA: 4 x 4 = 16), learning rate 1e-5, linear warm-up over 10% of the steps,
  max length 256 (QA 384), an evaluation every 1000 steps on 500 examples of the English dev set
  that keeps the best, stopping after 30 evaluations without improvement; AdamW with weight
  decay 0.01, gradient norm 1 (``jiant/shared/model_setup.py``, ``runscript.py``). Retrieval:
  mean pooling of hidden state 14 (``retrieval_layer`` of ``xtreme_runconfig_writer.py``, set
  for XLM-R large; other depths as ``xtreme_layer``).
- ``xtreme``: XTREME's own ``scripts/train_{xnli,pawsx,udpos,panx,qa}.sh`` with their
  XLM-R-large settings and the defaults of ``third_party/run_{classify,tag,squad}.py``
  (weight decay 0, no warm-up, batch 2 x 16; QA 4 x 8, 3 epochs, learning rate 3e-5, 500
  warm-up steps, weight decay 1e-4 and no checkpoint selection). Retrieval as its
  ``scripts/run_tatoeba.sh``: mean pooling of layer 13 of the last 24 (hidden state 14) for
  24-layer models, of layer 7 of the last 12 (hidden state 8) for 12-layer ones.

One step is ``batch_size * grad_accum`` examples. The sources' micro-batches (2 or 4, sized
for 2020's GPUs) are kept as the presets' ``batch_size``; ``batch_size = 32, grad_accum = 1``
takes the same optimizer steps with fewer, larger forward passes where memory allows.

A config file overrides any value: a TOML table per task (``[xnli]``, ``[tatoeba]``) and
``[fine_tuning]`` / ``[retrieval]`` for every task of that kind, plus top-level ``preset`` and
``seed``; an extra target task's table (``[xflickrco]``) overrides that task's own recipe class.
Unknown keys and values of the wrong type are errors naming the key."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.config import Pooling
from xretrieve.core.errors import InputError, MissingDependencyError, XRetrieveError
from xretrieve.core.settings import Backend
from xretrieve.trainer.config import Precision

FINE_TUNED_TASKS = ("xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa")
RETRIEVAL_TASKS = ("bucc2018", "tatoeba")
DEFAULT_PRESET = "jiant"


@dataclass(frozen=True)
class FineTuneRecipe:
    """Fine-tuning one target task on its English training data and choosing the checkpoint.

    ``eval_every`` steps (and at the end) the English dev set is scored (its first
    ``max_eval_examples`` examples; None: all) and the best checkpoint kept; ``patience``
    evaluations without improvement stop the run (None: never). ``select_on_dev`` False, or a
    task without a labelled English dev set, takes the last checkpoint. ``warmup_steps``, when
    set, replaces ``warmup_ratio``. ``max_train_examples`` caps the training set (quick runs)."""

    epochs: float
    learning_rate: float
    batch_size: int
    grad_accum: int
    max_length: int
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int = 1000
    eval_batch_size: int = 64
    max_eval_examples: int | None = 500
    patience: int | None = 30
    select_on_dev: bool = True
    # tokens of overlap between a long context's windows (Hugging Face's meaning): 188 is the
    # step of 128 that jiant and XTREME's run_squad.py give, for a 64-token question at 384
    doc_stride: int = 188
    max_query_length: int = 64
    max_answer_length: int = 30
    max_train_examples: int | None = None
    precision: Precision = Precision.AUTO


@dataclass(frozen=True)
class RetrievalRecipe:
    """Embedding sentences for BUCC and Tatoeba with the toolkit's encoder: ``layer`` is a
    hidden-state index (0 = embeddings, as ``xretrieve evaluate --layers``); None takes
    XTREME's (``xtreme_layer``). ``backend`` ORT exports the checkpoint once (cached)."""

    layer: int | None = None
    pooling: Pooling = Pooling.MEAN
    backend: Backend = Backend.ORT
    batch_tokens: int = 16384


Recipe = FineTuneRecipe | RetrievalRecipe


def xtreme_layer(num_layers: int) -> int:
    """The hidden state XTREME's ``run_tatoeba.sh`` pools for a model of ``num_layers`` layers:
    index ``LAYER`` of the last ``NLAYER`` hidden states, i.e. hidden state 14 of 24 (XLM-R
    large: ``LAYER=13``) and 8 of 12 (mBERT: ``LAYER=7``); for other depths the middle layer,
    ``ceil(num_layers / 2)``, as the XTREME paper describes its choice."""
    if num_layers == 24:
        return 14
    if num_layers == 12:
        return 8
    return max(1, math.ceil(num_layers / 2))


def _classification(epochs: float) -> FineTuneRecipe:
    return FineTuneRecipe(
        epochs=epochs, learning_rate=1e-5, batch_size=4, grad_accum=8, max_length=256
    )


def _qa() -> FineTuneRecipe:
    return FineTuneRecipe(epochs=2, learning_rate=1e-5, batch_size=4, grad_accum=4, max_length=384)


def _xtreme_classification(epochs: float, lr: float, eval_every: int) -> FineTuneRecipe:
    return FineTuneRecipe(
        epochs=epochs,
        learning_rate=lr,
        batch_size=2,
        grad_accum=16,
        max_length=128,
        warmup_ratio=0.0,
        weight_decay=0.0,
        eval_every=eval_every,
        max_eval_examples=None,
        patience=None,
    )


def _xtreme_qa() -> FineTuneRecipe:
    return FineTuneRecipe(
        epochs=3,
        learning_rate=3e-5,
        batch_size=4,
        grad_accum=8,
        max_length=384,
        warmup_steps=500,
        weight_decay=1e-4,
        max_eval_examples=None,
        patience=None,
        select_on_dev=False,
    )


PRESETS: dict[str, dict[str, Recipe]] = {
    "jiant": {
        "xnli": _classification(2),
        "pawsx": _classification(5),
        "udpos": _classification(10),
        "panx": _classification(10),
        "xquad": _qa(),
        "mlqa": _qa(),
        "tydiqa": _qa(),
        "bucc2018": RetrievalRecipe(),
        "tatoeba": RetrievalRecipe(),
    },
    "xtreme": {
        "xnli": _xtreme_classification(5, 3e-5, 100),
        "pawsx": _xtreme_classification(5, 2e-5, 200),
        "udpos": _xtreme_classification(10, 2e-5, 500),
        "panx": _xtreme_classification(10, 2e-5, 1000),
        "xquad": _xtreme_qa(),
        "mlqa": _xtreme_qa(),
        "tydiqa": _xtreme_qa(),
        "bucc2018": RetrievalRecipe(),
        "tatoeba": RetrievalRecipe(),
    },
}


@dataclass(frozen=True)
class RunSettings:
    """A config file's settings: the preset, the first seed (seeds are ``seed, seed + 1,
    ...``), and each task's recipe (every task of the preset, and each extra task's: an instance
    of its own recipe class)."""

    preset: str = DEFAULT_PRESET
    seed: int = 1
    recipes: Mapping[str, Any] = field(default_factory=dict)

    def recipe(self, task: str) -> Any:
        return self.recipes[task]


def default_settings(
    preset: str = DEFAULT_PRESET, extra: Mapping[str, Any] | None = None
) -> RunSettings:
    """The preset's recipes, and ``extra`` (task -> default recipe of a plugged-in task)."""
    if preset not in PRESETS:
        raise InputError(None, f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return RunSettings(preset=preset, recipes={**PRESETS[preset], **(extra or {})})


def load_settings(path: Path | None, extra: Mapping[str, Any] | None = None) -> RunSettings:
    """The settings of a TOML config (None: the default preset). Tables: ``[fine_tuning]`` and
    ``[retrieval]`` (every task of the kind), then ``[TASK]`` (one task); ``extra`` maps the
    names of plugged-in target tasks to their default recipes (frozen dataclasses), which their
    ``[TASK]`` tables override field by field, checked as the XTREME tasks' are."""
    extra = dict(extra or {})
    if path is None:
        return default_settings(extra=extra)
    raw = _read_toml(Path(path))
    preset = raw.pop("preset", DEFAULT_PRESET)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise InputError(path, f"'preset' must be one of {', '.join(PRESETS)}, got {preset!r}")
    seed = raw.pop("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(path, f"'seed' must be an integer, got {seed!r}")
    shared = {kind: _table(path, raw.pop(kind, {}), kind) for kind in ("fine_tuning", "retrieval")}
    recipes: dict[str, Any] = {}
    for task, base in PRESETS[preset].items():
        kind = "fine_tuning" if isinstance(base, FineTuneRecipe) else "retrieval"
        recipe = _override(path, base, shared[kind], kind)
        recipes[task] = _override(path, recipe, _table(path, raw.pop(task, {}), task), task)
    for task, base in extra.items():
        recipes[task] = _override(path, base, _table(path, raw.pop(task, {}), task), task)
    if raw:
        known = ["preset", "seed", "fine_tuning", "retrieval", *PRESETS[preset], *extra]
        raise InputError(
            path,
            f"unknown config key(s): {', '.join(sorted(raw))} (known: {', '.join(known)})",
        )
    return RunSettings(preset=preset, seed=seed, recipes=recipes)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise MissingDependencyError("tomli", "Reading TOML configs on Python 3.10") from None
    if path.suffix != ".toml":
        raise InputError(path, "the xtreme run config is a .toml file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise InputError(path, f"cannot read config: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(path, f"invalid TOML: {error}") from None


def _table(path: Path, value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(path, f"'{name}' must be a table ([{name}])")
    return value


def _override(path: Path, recipe: Any, table: Mapping[str, Any], where: str) -> Any:
    """``recipe`` (a frozen dataclass) with the values of ``table``, each checked against its
    field's type; a value its class refuses is an error naming the key too."""
    fields = {f.name: f for f in dataclasses.fields(recipe)}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise InputError(
                path,
                f"unknown key '{where}.{key}' (a {type(recipe).__name__} has: {', '.join(fields)})",
            )
        changes[key] = _checked(path, f"{where}.{key}", getattr(recipe, key), value, fields[key])
    if not changes:
        return recipe
    try:
        return dataclasses.replace(recipe, **changes)
    except XRetrieveError as error:
        raise InputError(path, f"'{where}': {error}") from None


_OPTIONAL = {
    "warmup_steps",
    "max_eval_examples",
    "patience",
    "max_train_examples",
    "layer",
}


def _checked(path: Path, key: str, current: Any, value: Any, spec: dataclasses.Field) -> Any:
    name = spec.name
    if isinstance(current, enum.Enum):
        try:
            return type(current)(value)
        except ValueError:
            allowed = ", ".join(member.value for member in type(current))
            raise InputError(path, f"'{key}' must be one of {allowed}, got {value!r}") from None
    if name in _OPTIONAL and value in ("none", "None"):
        return None
    if isinstance(current, bool) or name == "select_on_dev":
        if not isinstance(value, bool):
            raise InputError(path, f"'{key}' must be true or false, got {value!r}")
        return value
    wants_int = name in _OPTIONAL or isinstance(current, int)
    if name in ("epochs", "learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm"):
        wants_int = False
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(path, f"'{key}' must be a number, got {value!r}")
    if wants_int and not isinstance(value, int):
        raise InputError(path, f"'{key}' must be an integer, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and name not in _ZERO_ALLOWED):
        raise InputError(path, f"'{key}' must be a positive number, got {value!r}")
    return value if wants_int else float(value)


_ZERO_ALLOWED = {"warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm", "layer"}


def recipe_json(recipe: Any) -> dict[str, Any]:
    """A recipe's values as JSON (enums as their values): part of a unit's fingerprint."""
    return {
        key: value.value if isinstance(value, enum.Enum) else value
        for key, value in dataclasses.asdict(recipe).items()
    }
