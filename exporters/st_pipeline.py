"""sentence-transformers model folders: the pipeline that ``modules.json`` builds around the
Hugging Face transformer, read without sentence-transformers and without torch.

A folder saved by sentence-transformers holds ``modules.json`` (a list of ``{idx, name, path,
type}``) and one folder per module: the transformer (``config.json``, weights and tokenizer at
``path``, usually the folder itself, with ``sentence_bert_config.json``), ``1_Pooling``
(``config.json``), any ``Dense`` layers (``config.json`` and ``model.safetensors``) and a
``Normalize``; ``config_sentence_transformers.json`` names its prompts. xretrieve exports the
pipeline Transformer -> Pooling -> Dense* -> Normalize? into the ONNX graph; any other module
(custom code, ``Asym``, ``CNN``, ``WordEmbeddings``, ``LSTM``, ...) and any setting that would
change the vectors in a way the exporter does not reproduce is refused by name, never ignored.

The semantics are those of sentence-transformers 6.3: its ``Pooling``, ``Dense`` (any torch
activation without parameters) and ``Normalize`` modules, ``do_lower_case`` as a ``Lowercase``
normaliser in front of the tokenizer's own, and ``include_prompt=False`` excluding the prompt's
tokens (those of the prompt tokenised alone, a trailing special token not counted) from pooling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.readers import read_bytes, read_json_object
from xretrieve.core.settings import Pooling

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODULES_FILE = "modules.json"
PROMPTS_FILE = "config_sentence_transformers.json"
TRANSFORMER_SETTINGS_FILE = "sentence_bert_config.json"
MODULE_CONFIG_FILE = "config.json"
DENSE_WEIGHTS = "model.safetensors"

# The modules xretrieve exports, by class name (sentence-transformers has written each under
# several module paths: ``sentence_transformers.models.Dense``,
# ``sentence_transformers.base.modules.dense.Dense``, ...).
TRANSFORMER, POOLING, DENSE, NORMALIZE = "Transformer", "Pooling", "Dense", "Normalize"
_PACKAGE = "sentence_transformers."

# ``pooling_mode_*`` flags of sentence-transformers before 6 -> the mode each turns on, in its
# order of concatenation.
_LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": Pooling.CLS,
    "pooling_mode_max_tokens": Pooling.MAX,
    "pooling_mode_mean_tokens": Pooling.MEAN,
    "pooling_mode_mean_sqrt_len_tokens": Pooling.MEAN_SQRT_LEN,
    "pooling_mode_weightedmean_tokens": Pooling.WEIGHTED_MEAN,
    "pooling_mode_lasttoken": Pooling.LAST_TOKEN,
}
# torch.nn activations sentence-transformers can write for a Dense layer (it instantiates the
# class without arguments): the element-wise ones without parameters.
DENSE_ACTIVATIONS = (
    "Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "Mish", "ELU", "CELU", "SELU",
    "LeakyReLU", "ReLU6", "Hardtanh", "Hardsigmoid", "Hardswish", "Hardshrink", "Softshrink",
    "Softplus", "Softsign", "Tanhshrink", "LogSigmoid",
)  # fmt: skip
_ACTIVATION_MODULES = ("torch.nn.modules.activation.", "torch.nn.modules.linear.", "torch.nn.")
# sentence_bert_config.json: keys whose value must be one of the listed (the default first),
# because another value changes what the transformer computes or how text is tokenised.
_TRANSFORMER_FIXED: dict[str, tuple[Any, ...]] = {
    "transformer_task": (None, "feature-extraction"),
    "modality_config": (
        None,
        {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
    ),
    "module_output_name": (None, "token_embeddings"),
    "query_length": (None,),
    "document_length": (None,),
    "query_expansion": (None,),
}
# ... keys that must be empty (arguments to transformers and the tokenizer, under their names of
# sentence-transformers 6 and of earlier versions).
_TRANSFORMER_EMPTY = (
    "processing_kwargs", "model_kwargs", "model_args", "processor_kwargs", "tokenizer_args",
    "config_kwargs", "config_args",
)  # fmt: skip
# ... keys that do not change the vectors.
_TRANSFORMER_FREE = ("max_seq_length", "do_lower_case", "unpad_inputs", "backend")
_SENTENCE_OUTPUT = (None, "sentence_embedding")


@dataclass(frozen=True)
class DenseLayer:
    """One ``Dense`` module: ``activation(x @ weight.T + bias)``, its weights in
    ``path/model.safetensors`` (``linear.weight`` ``(out_features, in_features)``,
    ``linear.bias`` ``(out_features,)`` when ``bias``). ``activation``: a torch.nn class name
    of ``DENSE_ACTIVATIONS``."""

    path: str
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass(frozen=True)
class SentencePipeline:
    """What a sentence-transformers folder computes around its transformer.

    ``transformer_path``: the transformer's folder inside the model folder ("" = the folder
    itself). ``max_seq_length``: tokens per text (None: the tokenizer's own limit).
    ``do_lower_case``: texts are lower-cased before tokenising. ``pooling`` of the last hidden
    state's tokens, without the prompt's tokens unless ``include_prompt``; then the ``dense``
    layers in order, then L2 normalisation when ``normalize``. ``prompts`` (name -> text) and
    ``default_prompt_name`` as in ``config_sentence_transformers.json``; ``modules`` the module
    kinds in order, e.g. ("Transformer", "Pooling", "Dense", "Normalize")."""

    transformer_path: str
    max_seq_length: int | None
    do_lower_case: bool
    pooling: Pooling
    include_prompt: bool
    dense: tuple[DenseLayer, ...]
    normalize: bool
    prompts: Mapping[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    modules: tuple[str, ...] = ()

    @property
    def dim(self) -> int | None:
        """Width of the pipeline's output when it has Dense layers, else None (the hidden size)."""
        return self.dense[-1].out_features if self.dense else None

    def prompt(self) -> tuple[str, str] | None:
        """``(name, text)`` of the prompt xretrieve prepends to every text (``choose_prompt``)."""
        return choose_prompt(self.prompts, self.default_prompt_name)

    def to_json(self) -> dict[str, Any]:
        """The pipeline as JSON-ready values (for the export's manifest)."""
        chosen = self.prompt()
        return {
            "modules": list(self.modules),
            "transformer_path": self.transformer_path,
            "max_seq_length": self.max_seq_length,
            "do_lower_case": self.do_lower_case,
            "pooling": self.pooling.value,
            "include_prompt": self.include_prompt,
            "dense": [
                {
                    "path": layer.path,
                    "in_features": layer.in_features,
                    "out_features": layer.out_features,
                    "bias": layer.bias,
                    "activation": layer.activation,
                }
                for layer in self.dense
            ],
            "normalize": self.normalize,
            "prompts": dict(self.prompts),
            "default_prompt_name": self.default_prompt_name,
            "prompt_name": chosen[0] if chosen is not None else None,
        }


def choose_prompt(prompts: Mapping[str, str], default_name: str | None) -> tuple[str, str] | None:
    """``(name, text)`` of the prompt xretrieve prepends to every text: the default prompt
    (``default_prompt_name``), which sentence-transformers' ``encode`` applies when no other is
    asked for; else the prompt named ``query``, which E5-style models are meant to use on both
    sides of a symmetric task (bitext mining, retrieval of translations); else None."""
    for name in (default_name, "query"):
        if name is not None and name in prompts:
            return name, prompts[name]
    return None


def folder_prompt(folder: Path | str) -> tuple[str, str] | None:
    """``choose_prompt`` of a sentence-transformers folder's ``config_sentence_transformers.json``
    (None without one). Reads that file only; ``InputError`` when it is malformed."""
    return choose_prompt(*_read_prompts(Path(folder)))


def folder_prompts(folder: Path | str) -> dict[str, str]:
    """The prompts (name -> text) of a folder's ``config_sentence_transformers.json``; none
    without one. ``InputError`` when it is malformed."""
    return _read_prompts(Path(folder))[0]


def is_sentence_transformers_folder(folder: Path | str) -> bool:
    """Whether ``folder`` holds a ``modules.json`` (a sentence-transformers model)."""
    return (Path(folder) / MODULES_FILE).is_file()


def transformer_directory(folder: Path | str) -> Path:
    """The folder holding the Hugging Face transformer (``config.json``, weights, tokenizer):
    the Transformer module's folder of a sentence-transformers folder, else ``folder`` itself.
    A ``modules.json`` that names none is refused later by ``read_sentence_pipeline``."""
    folder = Path(folder)
    if not is_sentence_transformers_folder(folder):
        return folder
    for module in _read_modules(folder):
        if _class_name(module["type"]) == TRANSFORMER:
            return folder / module["path"] if module["path"] else folder
        break
    return folder


def read_sentence_pipeline(folder: Path | str) -> SentencePipeline | None:
    """The ``SentencePipeline`` of a sentence-transformers folder, or None for a folder without
    ``modules.json``. ``InputError`` naming the file for a module or setting the exporter does
    not reproduce, a module out of the order Transformer, Pooling, Dense*, Normalize?, or a
    malformed file."""
    folder = Path(folder)
    if not is_sentence_transformers_folder(folder):
        return None
    modules = _read_modules(folder)
    kinds = [_module_kind(folder, module) for module in modules]
    _check_order(folder, modules, kinds)
    transformer = modules[0]["path"]
    max_seq_length, do_lower_case = _read_transformer_settings(folder / transformer)
    pooling, include_prompt, width = _read_pooling(folder / modules[1]["path"])
    dense = tuple(
        _read_dense(folder, module["path"])
        for module, kind in zip(modules, kinds, strict=True)
        if kind == DENSE
    )
    _check_widths(folder, width, dense)
    for module, kind in zip(modules, kinds, strict=True):
        if kind == NORMALIZE:
            _check_normalize(folder / module["path"])
    prompts, default_prompt_name = _read_prompts(folder)
    return SentencePipeline(
        transformer_path=transformer,
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        pooling=pooling,
        include_prompt=include_prompt,
        dense=dense,
        normalize=NORMALIZE in kinds,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        modules=tuple(kinds),
    )


def _read_modules(folder: Path) -> list[dict[str, str]]:
    path = folder / MODULES_FILE
    try:
        modules = json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not valid JSON: {error}") from None
    if not isinstance(modules, list) or not modules:
        raise InputError(path, "expected a non-empty list of modules {idx, name, path, type}")
    checked = []
    for number, module in enumerate(modules):
        if not isinstance(module, dict):
            raise InputError(path, f"module {number} is not an object {{idx, name, path, type}}")
        kind, where = module.get("type"), module.get("path", "")
        if not isinstance(kind, str) or not isinstance(where, str):
            raise InputError(path, f"module {number} needs a string 'type' and 'path'")
        if where and (Path(where).name != where or where in (".", "..")):
            raise InputError(path, f"module {number}: path {where!r} is not a folder name")
        checked.append({"type": kind, "path": where, "name": str(module.get("name", number))})
    return checked


def _class_name(kind: str) -> str:
    return kind.rsplit(".", 1)[-1]


def _module_kind(folder: Path, module: dict[str, str]) -> str:
    """TRANSFORMER, POOLING, DENSE or NORMALIZE; ``InputError`` for any other module."""
    kind = module["type"]
    path = folder / MODULES_FILE
    if not kind.startswith(_PACKAGE):
        raise InputError(
            path,
            f"module {module['name']} is {kind!r}, custom code that xretrieve never runs; "
            "only sentence-transformers' Transformer, Pooling, Dense and Normalize modules "
            "can be exported",
        )
    name = _class_name(kind)
    if name not in (TRANSFORMER, POOLING, DENSE, NORMALIZE):
        raise InputError(
            path,
            f"module {module['name']} is sentence-transformers' {name} ({kind}), which xretrieve "
            "does not export: only Transformer, Pooling, Dense and Normalize modules can be",
        )
    return name


def _check_order(folder: Path, modules: list[dict[str, str]], kinds: list[str]) -> None:
    expected = "the order Transformer, Pooling, Dense (any number), Normalize (optional)"
    path = folder / MODULES_FILE
    if kinds[:2] != [TRANSFORMER, POOLING]:
        raise InputError(
            path, f"the modules are {', '.join(kinds)}; xretrieve exports only {expected}"
        )
    rest = kinds[2:]
    dense_count = 0
    while dense_count < len(rest) and rest[dense_count] == DENSE:
        dense_count += 1
    if rest[dense_count:] not in ([], [NORMALIZE]):
        raise InputError(
            path, f"the modules are {', '.join(kinds)}; xretrieve exports only {expected}"
        )


def _positive_int(path: Path, key: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(path, f"'{key}' must be a positive integer, not {value!r}")
    return value


def _flag(path: Path, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(path, f"'{key}' must be true or false, not {value!r}")
    return value


def _refuse_unknown(path: Path, payload: Mapping[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(payload) - set(known))
    if unknown:
        raise InputError(
            path,
            f"unknown settings {', '.join(unknown)}: xretrieve cannot tell whether they change "
            f"the vectors (known: {', '.join(known)})",
        )


def _read_transformer_settings(transformer_dir: Path) -> tuple[int | None, bool]:
    """``(max_seq_length, do_lower_case)`` of ``sentence_bert_config.json`` (optional file)."""
    path = transformer_dir / TRANSFORMER_SETTINGS_FILE
    if not path.is_file():
        return None, False
    payload = read_json_object(path)
    _refuse_unknown(path, payload, (*_TRANSFORMER_FIXED, *_TRANSFORMER_EMPTY, *_TRANSFORMER_FREE))
    for key, allowed in _TRANSFORMER_FIXED.items():
        if payload.get(key) not in allowed:
            raise InputError(
                path,
                f"{key} {payload[key]!r} is not supported: xretrieve exports a text encoder's "
                f"token embeddings ({key} {allowed[-1]!r})",
            )
    for key in _TRANSFORMER_EMPTY:
        if payload.get(key):
            raise InputError(
                path,
                f"{key} {payload[key]!r} is not supported: xretrieve loads the transformer and "
                "its tokenizer with their own settings",
            )
    max_seq_length = _positive_int(
        path, "max_seq_length", payload.get("max_seq_length"), optional=True
    )
    return max_seq_length, _flag(path, "do_lower_case", payload.get("do_lower_case", False))


def _read_pooling(module_dir: Path) -> tuple[Pooling, bool, int]:
    """``(pooling, include_prompt, embedding dimension)`` of a Pooling module."""
    path = module_dir / MODULE_CONFIG_FILE
    payload = read_json_object(path)
    _refuse_unknown(
        path,
        payload,
        (
            "embedding_dimension",
            "word_embedding_dimension",
            "pooling_mode",
            "include_prompt",
            *_LEGACY_POOLING_FLAGS,
        ),
    )
    width = payload.get("embedding_dimension", payload.get("word_embedding_dimension"))
    width = _positive_int(path, "embedding_dimension", width)
    mode = payload.get("pooling_mode")
    if mode is None:
        modes = [
            pooling
            for key, pooling in _LEGACY_POOLING_FLAGS.items()
            if _flag(path, key, payload.get(key, False))
        ] or [Pooling.MEAN]
    else:
        names = [mode] if isinstance(mode, str) else mode
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InputError(path, f"'pooling_mode' must be a mode or a list of modes: {mode!r}")
        modes = []
        for name in names:
            try:
                modes.append(Pooling(name))
            except ValueError:
                known = ", ".join(member.value for member in Pooling)
                raise InputError(path, f"unknown pooling mode {name!r} (known: {known})") from None
    if len(modes) != 1:
        raise InputError(
            path,
            f"pooling modes {', '.join(mode.value for mode in modes)} together (concatenated) "
            "are not supported: xretrieve exports one pooling mode",
        )
    include_prompt = _flag(path, "include_prompt", payload.get("include_prompt", True))
    assert width is not None
    return modes[0], include_prompt, width


def _activation(path: Path, value: Any) -> str:
    """The torch.nn class name of a Dense layer's ``activation_function`` (default Tanh, as
    sentence-transformers)."""
    if value is None:
        return "Tanh"
    if isinstance(value, str):
        for prefix in _ACTIVATION_MODULES:
            name = value.removeprefix(prefix)
            if value.startswith(prefix) and name in DENSE_ACTIVATIONS:
                return name
    raise InputError(
        path,
        f"activation_function {value!r} is not supported: xretrieve exports the torch.nn "
        f"activations without parameters ({', '.join(DENSE_ACTIVATIONS)})",
    )


def _read_dense(folder: Path, module_path: str) -> DenseLayer:
    path = folder / module_path / MODULE_CONFIG_FILE
    payload = read_json_object(path)
    _refuse_unknown(
        path,
        payload,
        (
            "in_features",
            "out_features",
            "bias",
            "activation_function",
            "module_input_name",
            "module_output_name",
            "use_residual",
        ),
    )
    for key in ("module_input_name", "module_output_name"):
        if payload.get(key) not in _SENTENCE_OUTPUT:
            raise InputError(
                path,
                f"{key} {payload[key]!r} is not supported: xretrieve's Dense layers act on the "
                "sentence embedding",
            )
    if _flag(path, "use_residual", payload.get("use_residual", False)):
        raise InputError(path, "use_residual (a residual connection) is not supported")
    in_features = _positive_int(path, "in_features", payload.get("in_features"))
    out_features = _positive_int(path, "out_features", payload.get("out_features"))
    assert in_features is not None and out_features is not None
    return DenseLayer(
        path=module_path,
        in_features=in_features,
        out_features=out_features,
        bias=_flag(path, "bias", payload.get("bias", True)),
        activation=_activation(path, payload.get("activation_function")),
    )


def _check_widths(folder: Path, width: int, dense: tuple[DenseLayer, ...]) -> None:
    for layer in dense:
        if layer.in_features != width:
            raise InputError(
                folder / layer.path / MODULE_CONFIG_FILE,
                f"in_features {layer.in_features} does not match the {width} values it is given",
            )
        width = layer.out_features


def _check_normalize(module_dir: Path) -> None:
    path = module_dir / MODULE_CONFIG_FILE
    if not path.is_file():  # sentence-transformers before 6 wrote an empty folder, or none
        return
    payload = read_json_object(path)
    _refuse_unknown(path, payload, ("module_input_name", "module_output_name"))
    for key in ("module_input_name", "module_output_name"):
        if payload.get(key) not in _SENTENCE_OUTPUT:
            raise InputError(
                path,
                f"{key} {payload[key]!r} is not supported: xretrieve normalises the sentence "
                "embedding",
            )


def _read_prompts(folder: Path) -> tuple[dict[str, str], str | None]:
    path = folder / PROMPTS_FILE
    if not path.is_file():
        return {}, None
    payload = read_json_object(path)
    model_type = payload.get("model_type", "SentenceTransformer")
    if model_type != "SentenceTransformer":
        raise InputError(
            path,
            f"model_type {model_type!r} is not supported: xretrieve exports SentenceTransformer "
            "(dense sentence embedding) models",
        )
    prompts = payload.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(name, str) and isinstance(text, str) for name, text in prompts.items()
    ):
        raise InputError(path, f"'prompts' must map names to strings, not {prompts!r}")
    default = payload.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise InputError(
            path,
            f"default_prompt_name {default!r} is not among the prompts "
            f"({', '.join(prompts) or 'none'})",
        )
    return dict(prompts), default


def check_pipeline_settings(
    pipeline: SentencePipeline,
    *,
    pooling: Pooling | None,
    normalize: bool,
    layers: tuple[int, ...],
    num_layers: int,
    projection: bool,
) -> Pooling:
    """The pooling of an export (or torch encoder) of a sentence-transformers folder, after the
    checks that the settings asked for keep its pipeline whole: ``pooling`` None or the
    pipeline's, ``normalize`` when the pipeline ends in Normalize, only the last hidden state
    (``layers`` resolved, of ``num_layers``) when it has Dense layers (they were trained on
    it), and no image-text ``projection`` head. ``XRetrieveError`` naming the parameter."""
    own = pipeline.pooling
    if pooling is not None and pooling is not own:
        raise XRetrieveError(
            f"{{pooling={pooling.value!r}}} contradicts the sentence-transformers pipeline, "
            f"which pools with {own.value!r}: leave the pooling unset",
            arguments=("pooling",),
        )
    if pipeline.normalize and not normalize:
        raise XRetrieveError(
            "{normalize=False} contradicts the sentence-transformers pipeline, which ends in "
            "Normalize: keep the normalisation",
            arguments=("normalize",),
        )
    if pipeline.dense and layers != (num_layers,):
        raise XRetrieveError(
            f"the sentence-transformers pipeline's Dense layers were trained on the last hidden "
            f"state ({num_layers}); {{layers}} {list(layers)} would feed them other vectors",
            arguments=("layers",),
        )
    if projection:
        raise XRetrieveError(
            "{projection} attaches an image-text head trained by xretrieve; a "
            "sentence-transformers folder brings its own pipeline",
            arguments=("projection",),
        )
    return own


def lowercase_tokenizer(tokenizer: Tokenizer) -> None:
    """Make a ``tokenizers.Tokenizer`` lower-case its input first, as sentence-transformers does
    for ``do_lower_case``: a ``Lowercase`` normaliser in front of the tokenizer's own, unless
    that already lower-cases."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    normalizer = tokenizer.normalizer
    if _lowercases(normalizer):
        return
    if normalizer is None:
        tokenizer.normalizer = Lowercase()
    elif isinstance(normalizer, NormalizerSequence):
        tokenizer.normalizer = NormalizerSequence([Lowercase(), *list(normalizer)])
    else:
        tokenizer.normalizer = NormalizerSequence([Lowercase(), normalizer])


def _lowercases(normalizer: Any) -> bool:
    if normalizer is None:
        return False
    state = json.loads(normalizer.__getstate__())

    def visit(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Lowercase" or (
                node.get("type") == "BertNormalizer" and node.get("lowercase")
            ):
                return True
            return any(visit(child) for child in node.get("normalizers", []))
        return False

    return visit(state)


def prompt_token_count(tokenizer: Tokenizer, prompt: str) -> int:
    """Tokens at the start of every text that the ``prompt`` takes, as sentence-transformers
    counts them for ``include_prompt=False``: the prompt tokenised alone (special tokens added),
    its trailing special token not counted. 0 for an empty prompt."""
    if not prompt:
        return 0
    encoding = tokenizer.encode(prompt)
    count = len(encoding.ids)
    if count and encoding.special_tokens_mask[-1]:
        count -= 1
    return count
