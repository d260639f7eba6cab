"""``load_encoder``: a model name or directory -> a ready ``SentenceEncoder``.

A model is an export directory (manifest.json, used as is), a Hugging Face checkpoint directory
(exported on first use into ``cache_dir()/exports/<content hash>-<settings>``), or the default
model (multilingual-e5-small with the "query: " prefix)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xretrieve.core.arguments import check_int, check_optional_str, check_progress
from xretrieve.core.cache import cache_dir, content_hash
from xretrieve.core.devices import ort_cuda_available, torch_cuda_available
from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError
from xretrieve.core.integrity import DIRECTORY_RECORD, verify_record, write_directory_record
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.settings import (
    Backend,
    Device,
    Dtype,
    Pooling,
    SourceKind,
    dtype_on,
    parse_backend,
    parse_device,
    parse_dtype,
    parse_pooling,
)
from xretrieve.encoding.encoder import DEFAULT_WINDOW, SentenceEncoder
from xretrieve.encoding.ort_backend import CudaProviderUnavailable, OrtBackend, OrtOptions
from xretrieve.encoding.tokenize import TextTokenizer, tokenizer_max_length

if TYPE_CHECKING:
    from exporters import Manifest

logger = logging.getLogger(__name__)

# What an encoder runs in: an int8 graph comes only from an export made with it.
ENCODER_DTYPES = (Dtype.AUTO, Dtype.FP16, Dtype.FP32)
DEFAULT_MODEL_ALIASES = ("default", "intfloat/multilingual-e5-small")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: ``kind`` EXPORT (a directory with manifest.json) or
    CHECKPOINT (a Hugging Face directory); ``text_prefix`` is the prefix a checkpoint needs
    (exports carry their own, in their manifest)."""

    kind: SourceKind
    path: Path
    name: str
    text_prefix: str = ""
    # A calibrated margin threshold that comes with the model (``model_settings``), or None.
    mining_threshold: Mapping[str, Any] | None = None


def resolve_device(device: Device | str, backend: Backend | str) -> Device:
    """``Device.CUDA`` or ``Device.CPU`` for a requested ``device`` (a member or its value; AUTO
    = CUDA when the backend can use a GPU here). Unknown values raise ``ArgumentError``; asking
    for CUDA without a usable GPU, ``XRetrieveError``."""
    return usable_device(parse_device(device), parse_backend(backend))


def usable_device(device: Device, backend: Backend) -> Device:
    """``resolve_device`` of members: CUDA or CPU."""
    if device is Device.CPU:
        return Device.CPU
    usable = ort_cuda_available() if backend is Backend.ORT else torch_cuda_available()
    if device is Device.CUDA and not usable:
        what = "torch" if backend is Backend.TORCH else "torch/onnxruntime-gpu"
        raise ArgumentError(
            "device", f"{{device='cuda'}} was asked for, but {what} sees no usable CUDA GPU"
        )
    return Device.CUDA if usable else Device.CPU


def resolve_model(
    model: str | Path | None, progress: ProgressCallback | None = None
) -> ModelSource:
    """Classify ``model``: None or a default-model name -> the default checkpoint (converted or
    found on first use); a directory with manifest.json -> an export; with config.json -> a
    checkpoint (with the prefix ``read_model_settings`` gives it: its ``xretrieve.json``, a
    sentence-transformers folder's prompt); with modules.json -> a sentence-transformers
    checkpoint; a Hugging Face model id ``org/name`` that is no local path -> its snapshot in
    the hub cache (see ``hub_snapshot``).
    Anything else raises ``InputError``."""
    from exporters.model_settings import default_model_settings, read_model_settings

    if model is None or str(model) in DEFAULT_MODEL_ALIASES:
        from xretrieve.encoding.default_model import DEFAULT_MODEL, default_checkpoint

        path = default_checkpoint(progress)
        settings = default_model_settings()
        return ModelSource(
            SourceKind.CHECKPOINT,
            Path(path),
            DEFAULT_MODEL,
            settings.text_prefix,
            settings.mining_threshold,
        )
    path = Path(model)
    if not path.exists() and is_model_id(str(model)):
        from xretrieve.encoding.hub import hub_snapshot

        snapshot = hub_snapshot(str(model))
        if not is_checkpoint_folder(snapshot):
            raise InputError(
                snapshot, f"the hub snapshot of {model} has no config.json (nor modules.json)"
            )
        settings = read_model_settings(snapshot)
        return ModelSource(
            SourceKind.CHECKPOINT,
            snapshot,
            str(model),
            settings.text_prefix,
            settings.mining_threshold,
        )
    if (path / "manifest.json").is_file():
        return ModelSource(SourceKind.EXPORT, path, path.name)
    if is_checkpoint_folder(path):
        settings = read_model_settings(path)
        return ModelSource(
            SourceKind.CHECKPOINT, path, path.name, settings.text_prefix, settings.mining_threshold
        )
    if not path.exists():
        raise InputError(
            path,
            "no such model directory (give an export directory, a Hugging Face checkpoint "
            f"directory, a Hugging Face model id such as org/name, or '{DEFAULT_MODEL_ALIASES[0]}' "
            "for the default model)",
        )
    raise InputError(
        path, "neither an export (no manifest.json) nor a checkpoint directory (no config.json)"
    )


def is_checkpoint_folder(path: Path) -> bool:
    """A Hugging Face checkpoint (``config.json``) or a sentence-transformers folder
    (``modules.json``, its transformer possibly in a folder of its own)."""
    from exporters.st_pipeline import is_sentence_transformers_folder

    return (path / "config.json").is_file() or is_sentence_transformers_folder(path)


def checkpoint_directory(model: str | Path, progress: ProgressCallback | None = None) -> Path:
    """The checkpoint folder ``model`` names, as ``xretrieve export`` takes it: "default" (or
    the default model's hub id) is the default model's folder (converted on first use, see
    ``resolve_model``), a Hugging Face id ``org/name`` that is no local path its hub snapshot;
    anything else is a path, returned as it is (``export_checkpoint`` checks it)."""
    name = str(model)
    if name in DEFAULT_MODEL_ALIASES or (not Path(model).exists() and is_model_id(name)):
        return resolve_model(name, progress).path
    return Path(model)


def is_model_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hugging Face model id: ``org/name`` of letters,
    digits, ``-``, ``_`` and ``.`` (no leading dot, no ``..``)."""
    return _MODEL_ID.fullmatch(name) is not None and ".." not in name


_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def load_encoder(
    model: str | Path | None = "default",
    *,
    backend: Backend | str = Backend.ORT,
    device: Device | str = Device.AUTO,
    batch_tokens: int = 16384,
    layers: Sequence[int] | None = None,
    dtype: Dtype | str = Dtype.AUTO,
    pooling: Pooling | str | None = None,
    text_prefix: str | None = None,
    window: int = DEFAULT_WINDOW,
    projection: bool = False,
    ort_options: OrtOptions | None = None,
    progress: ProgressCallback | None = None,
    prompt: str | None = None,
) -> SentenceEncoder:
    """A ``SentenceEncoder`` for ``model`` (see ``resolve_model``) on ``backend`` ORT or TORCH.
    ``backend``, ``device``, ``dtype`` and ``pooling`` take a member of their enum
    (``xretrieve.core.settings``) or its value.

    ``device`` AUTO takes the GPU when usable; if ONNX Runtime then cannot load its CUDA
    provider, it falls back to the CPU (logged). ``dtype`` AUTO is fp16 on CUDA; on the CPU,
    torch runs fp32 and a checkpoint for ONNX Runtime is exported int8 where int8 keeps fp32's
    held-out retrieval accuracy in every language, else fp32 (``dtype_on``,
    ``exporters.dtype_choice``); for an export directory its own dtype is used. ``layers``
    (hidden-state indices, -1 = last), ``pooling`` (None: the model's own, which is its
    sentence-transformers pipeline's for such a folder and MEAN for other checkpoints) and
    ``text_prefix`` apply to checkpoints; an export's must match when given. Checkpoints are
    L2-normalised; a sentence-transformers folder runs its whole pipeline (pooling, Dense
    layers, Normalize). ``projection`` passes the pooled
    vectors through the checkpoint's trained image-text projection head (image-feature space).
    ``ort_options`` tunes the ONNX Runtime backend (sequence buckets, CUDA attention kernels).
    ``prompt`` names one of the model's prompts (``model_prompts``: a sentence-transformers
    folder's, E5's "query" and "passage") to prepend instead of its default; an export made
    with another prefix is refused. ``progress`` sees the default-model conversion and
    first-use export. Every argument is checked first: a bad one raises ``ArgumentError``
    naming it."""
    settings = _checked_settings(
        model, layers, pooling, dtype, text_prefix, batch_tokens, window, projection, ort_options
    )
    settings = replace(settings, prompt=check_optional_str("prompt", prompt))
    if settings.prompt is not None and settings.text_prefix is not None:
        raise ArgumentError.from_template("give either {prompt} or {text_prefix}, not both")
    check_progress(progress)
    backend, device = parse_backend(backend), parse_device(device)
    resolved_device = usable_device(device, backend)
    source = resolve_model(model, progress)
    settings = _with_prompt(source, settings)
    if backend is Backend.TORCH:
        return _torch_encoder(source, resolved_device, settings)
    try:
        return _ort_encoder(source, resolved_device, settings, progress)
    except CudaProviderUnavailable as error:
        if device is not Device.AUTO:
            raise
        logger.warning("%s; falling back to the CPU", error)
        return _ort_encoder(source, Device.CPU, settings, progress)


def _checked_settings(
    model: Any,
    layers: Any,
    pooling: Any,
    dtype: Any,
    text_prefix: Any,
    batch_tokens: Any,
    window: Any,
    projection: Any,
    ort_options: Any,
) -> _Settings:
    """``load_encoder``'s arguments checked (``ArgumentError`` naming a bad one) as ``_Settings``."""
    if model is not None and not isinstance(model, str | os.PathLike):
        raise ArgumentError(
            "model",
            "must be a model name or folder (str or pathlib.Path) or None, not "
            f"{type(model).__name__}",
        )
    dtype = parse_dtype(dtype, allowed=ENCODER_DTYPES)
    pooling = parse_pooling(pooling) if pooling is not None else None
    if layers is not None:
        if isinstance(layers, str | bytes) or not isinstance(layers, Sequence) or not layers:
            raise ArgumentError("layers", f"must be a non-empty list of integers, not {layers!r}")
        layers = tuple(
            check_int(f"layers[{i}]", layer, minimum=-(2**31)) for i, layer in enumerate(layers)
        )
    if not isinstance(projection, bool):
        raise ArgumentError("projection", f"must be True or False, not {projection!r}")
    if ort_options is not None and not isinstance(ort_options, OrtOptions):
        raise ArgumentError(
            "ort_options", f"must be an OrtOptions or None, not {type(ort_options).__name__}"
        )
    return _Settings(
        layers=layers,
        pooling=pooling,
        dtype=dtype,
        text_prefix=check_optional_str("text_prefix", text_prefix),
        batch_tokens=check_int("batch_tokens", batch_tokens),
        window=check_int("window", window),
        projection=projection,
        ort_options=ort_options,
    )


@dataclass(frozen=True)
class _Settings:
    layers: tuple[int, ...] | None
    pooling: Pooling | None
    dtype: Dtype
    text_prefix: str | None
    batch_tokens: int
    window: int
    projection: bool = False
    ort_options: OrtOptions | None = None
    prompt: str | None = None


def _with_prompt(source: ModelSource, settings: _Settings) -> _Settings:
    """``settings`` with the text of the prompt ``settings.prompt`` names as its text prefix;
    ``ArgumentError`` when the model has no prompt of that name."""
    if settings.prompt is None:
        return settings
    if source.kind is SourceKind.EXPORT:
        prompts = dict((_read_manifest(source.path).sentence_transformers or {}).get("prompts", {}))
    else:
        from exporters.model_settings import model_prompts

        prompts = model_prompts(source.path)
    if settings.prompt not in prompts:
        known = (
            f"its prompts are {', '.join(sorted(prompts))}"
            if prompts
            else "it names none: give {text_prefix} instead"
        )
        raise ArgumentError(
            "prompt",
            f"{source.name} has no prompt {settings.prompt!r} ({known})",
            others=() if prompts else ("text_prefix",),
        )
    return replace(settings, text_prefix=prompts[settings.prompt])


def _ort_encoder(
    source: ModelSource, device: Device, settings: _Settings, progress: ProgressCallback | None
) -> SentenceEncoder:
    if source.kind is SourceKind.CHECKPOINT:
        export_dir = ensure_export(source, settings, device, progress)
    else:
        export_dir = source.path
    manifest = _read_manifest(export_dir)
    if source.kind is SourceKind.EXPORT:
        _check_export_settings(manifest, settings, export_dir)
    if source.kind is SourceKind.EXPORT and manifest.dtype is Dtype.FP16 and device is Device.CPU:
        logger.warning(
            "%s is an fp16 export: on the CPU fp32 is faster and exact; export it with dtype fp32",
            export_dir,
        )
    if source.kind is SourceKind.EXPORT and manifest.dtype is Dtype.INT8 and device is Device.CUDA:
        logger.warning(
            "%s is an int8 export, made for the CPU execution provider: on CUDA its quantised "
            "MatMuls may run on the CPU; export it with dtype fp16",
            export_dir,
        )
    backend = OrtBackend(
        export_dir / manifest.model_file,
        device=device,
        options=settings.ort_options,
        pad_token_id=manifest.pad_token_id,
    )
    if backend.dim != manifest.dim:
        raise XRetrieveError(
            f"{export_dir}: model.onnx gives {backend.dim}-d vectors, the manifest says {manifest.dim}"
        )
    tokenizer = TextTokenizer.from_directory(
        export_dir,
        max_length=manifest.max_length,
        pad_token_id=manifest.pad_token_id,
        text_prefix=manifest.text_prefix,
    )
    _check_manifest_bounds(manifest, export_dir, tokenizer, tokenizer_max_length(export_dir))
    return SentenceEncoder(
        backend,
        tokenizer,
        name=source.name,
        layers=tuple(manifest.layers),
        batch_tokens=settings.batch_tokens,
        window=settings.window,
        mining_threshold=manifest.mining_threshold,
        buckets=backend.buckets,
    )


def _torch_encoder(source: ModelSource, device: Device, settings: _Settings) -> SentenceEncoder:
    from exporters.manifest import prompt_tokens_of
    from xretrieve.encoding.torch_backend import TorchBackend

    if source.kind is SourceKind.EXPORT:
        manifest = _read_manifest(source.path)
        _check_export_settings(manifest, settings, source.path)
        checkpoint = _export_source_checkpoint(manifest, source.path)
        layers, pooling = tuple(manifest.layers), manifest.pooling
        normalize, text_prefix = manifest.normalize, manifest.text_prefix
        max_length = manifest.max_length
        projection = manifest.projection is not None
        mining_threshold = manifest.mining_threshold
        prompt_tokens = prompt_tokens_of(manifest)
    else:
        checkpoint = source.path
        layers, pooling, normalize = settings.layers or (-1,), settings.pooling, True
        text_prefix = _prefix(source, settings)
        max_length = _checkpoint_max_length(checkpoint)
        projection = settings.projection
        mining_threshold = _mining_threshold(source, settings)
    tokenizer = _checkpoint_tokenizer(checkpoint, max_length, text_prefix)
    if source.kind is SourceKind.CHECKPOINT:
        prompt_tokens = _pooled_prompt_tokens(checkpoint, tokenizer)
    backend = TorchBackend(
        checkpoint,
        layers=layers,
        pooling=pooling,
        normalize=normalize,
        projection=projection,
        device=device,
        dtype=dtype_on(device, Backend.TORCH, settings.dtype),
        prompt_tokens=prompt_tokens,
    )
    if source.kind is SourceKind.EXPORT:
        _check_manifest_bounds(manifest, source.path, tokenizer, _checkpoint_max_length(checkpoint))
    return SentenceEncoder(
        backend,
        tokenizer,
        name=source.name,
        layers=backend.layers,
        batch_tokens=settings.batch_tokens,
        window=settings.window,
        mining_threshold=mining_threshold,
    )


def _prefix(source: ModelSource, settings: _Settings) -> str:
    return settings.text_prefix if settings.text_prefix is not None else source.text_prefix


def export_key(source: ModelSource, settings: _Settings, device: Device) -> str:
    """``<content hash>-<layers>-<pooling>-<dtype>[-p<prefix hash>]``: one cached export per
    distinct checkpoint content and export setting."""
    from exporters import num_hidden_layers, read_checkpoint_config, resolve_layers

    num_layers = num_hidden_layers(read_checkpoint_config(source.path))
    layers = resolve_layers(settings.layers or (-1,), num_layers)
    key = "-".join(
        (
            content_hash(source.path),
            "L" + "_".join(str(layer) for layer in layers),
            checkpoint_pooling(source.path, settings.pooling).value,
            dtype_on(device, Backend.ORT, settings.dtype).value,
        )
    )
    prefix = _prefix(source, settings)
    if prefix:
        key += "-p" + hashlib.sha256(prefix.encode()).hexdigest()[:8]
    threshold = _mining_threshold(source, settings)
    if threshold is not None:
        encoded = json.dumps(dict(threshold), sort_keys=True).encode()
        key += "-t" + hashlib.sha256(encoded).hexdigest()[:8]
    if settings.projection:
        key += "-proj"
    return key


def _mining_threshold(source: ModelSource, settings: _Settings) -> Mapping[str, Any] | None:
    """The model's calibrated threshold, which holds only for the prefix it was calibrated with."""
    if _prefix(source, settings) != source.text_prefix or settings.projection:
        return None
    return source.mining_threshold


def ensure_export(
    source: ModelSource, settings: _Settings, device: Device, progress: ProgressCallback | None
) -> Path:
    """The cached export of a checkpoint, made on first use. A file lock serialises processes
    that need the same export; ``export_checkpoint`` writes the directory atomically, and the
    digests of its files are recorded: a cached export whose files changed since (a damaged
    ``model.onnx``, say) is exported again, with a warning."""
    from filelock import FileLock

    from exporters import ExportConfig, export_checkpoint

    exports = cache_dir() / "exports"
    out_dir = exports / export_key(source, settings, device)
    record = out_dir / DIRECTORY_RECORD
    if (out_dir / "manifest.json").is_file() and verify_record(record) is None:
        return out_dir
    exports.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir.with_name(out_dir.name + ".lock"))):
        problem = verify_record(record) if out_dir.exists() else None
        if problem is not None or not (out_dir / "manifest.json").is_file():
            if out_dir.exists():
                logger.warning(
                    "cached export %s failed its integrity check (%s): exporting it again",
                    out_dir,
                    problem,
                )
                shutil.rmtree(out_dir)
            config = ExportConfig(
                layers=settings.layers or (-1,),
                pooling=settings.pooling,
                normalize=True,
                dtype=dtype_on(device, Backend.ORT, settings.dtype),
                text_prefix=_prefix(source, settings),
                projection=settings.projection,
                mining_threshold=_mining_threshold(source, settings),
                device=device,
            )
            logger.info("exporting %s to %s (first use)", source.path, out_dir)
            export_checkpoint(source.path, out_dir, config, progress)
            write_directory_record(out_dir)
    return out_dir


def _read_manifest(export_dir: Path) -> Manifest:
    from exporters import read_manifest

    return read_manifest(export_dir)


def _check_export_settings(manifest: Manifest, settings: _Settings, export_dir: Path) -> None:
    """An export's settings are fixed: refuse requests that contradict them."""
    from exporters import resolve_layers

    wrong = []
    if settings.layers is not None:
        layers = resolve_layers(settings.layers, manifest.num_hidden_layers)
        if layers != tuple(manifest.layers):
            wrong.append(f"layers {layers} (it has {tuple(manifest.layers)})")
    if settings.text_prefix is not None and settings.text_prefix != manifest.text_prefix:
        wrong.append(f"text prefix {settings.text_prefix!r} (it has {manifest.text_prefix!r})")
    if settings.pooling is not None and settings.pooling is not manifest.pooling:
        wrong.append(f"{settings.pooling.value} pooling (it has {manifest.pooling.value})")
    if settings.projection and manifest.projection is None:
        wrong.append("the image-text projection head (it has none)")
    if wrong:
        raise XRetrieveError(
            f"{export_dir} is an export with fixed settings and cannot give "
            + "; ".join(wrong)
            + ": pass the checkpoint directory, or export it again"
        )


def _check_manifest_bounds(
    manifest: Manifest, export_dir: Path, tokenizer: TextTokenizer, max_positions: int
) -> None:
    """Values of a (hand-edited) manifest that the model cannot take, refused at load rather
    than as an ONNX Runtime or torch error in the middle of a run. ``max_positions``: the most
    tokens the model takes (an export's tokenizer_config.json records what it was made for)."""
    path = Path(export_dir) / "manifest.json"
    if manifest.max_length > max_positions:
        raise InputError(
            path,
            f"'max_length' {manifest.max_length} exceeds the {max_positions} tokens the model "
            "takes (its position embeddings)",
        )
    if manifest.pad_token_id >= tokenizer.vocab_size:
        raise InputError(
            path,
            f"'pad_token_id' {manifest.pad_token_id} is outside the tokenizer's vocabulary "
            f"(ids 0..{tokenizer.vocab_size - 1})",
        )


def _export_source_checkpoint(manifest: Manifest, export_dir: Path) -> Path:
    """The checkpoint an export came from, if it is still there unchanged (for torch)."""
    checkpoint = Path(manifest.source_checkpoint)
    if (
        not (checkpoint / "config.json").is_file()
        or content_hash(checkpoint) != manifest.source_hash
    ):
        raise XRetrieveError(
            f"the torch backend needs the checkpoint {export_dir} was exported from, and "
            f"{checkpoint} is missing or changed: pass a checkpoint directory instead"
        )
    return checkpoint


def _checkpoint_max_length(checkpoint: Path) -> int:
    """Tokens per text for a checkpoint run by torch, as an export of it would use: a
    sentence-transformers folder's ``max_seq_length``, else the tokenizer's limit, capped by the
    position embeddings."""
    from exporters import read_checkpoint_config
    from exporters.st_pipeline import read_sentence_pipeline, transformer_directory
    from xretrieve.core.positions import usable_positions

    config = read_checkpoint_config(checkpoint)
    pipeline = read_sentence_pipeline(checkpoint)
    limit = (pipeline.max_seq_length if pipeline else None) or tokenizer_max_length(
        transformer_directory(checkpoint)
    )
    usable = usable_positions(
        config.get("model_type"), config.get("max_position_embeddings"), config.get("pad_token_id")
    )
    return limit if usable is None else min(limit, usable)


def checkpoint_pooling(checkpoint: Path, pooling: Pooling | None) -> Pooling:
    """The pooling a checkpoint is embedded with: ``pooling`` when given, else the folder's own
    (its sentence-transformers pipeline's, else MEAN)."""
    from exporters.st_pipeline import read_sentence_pipeline

    if pooling is not None:
        return pooling
    pipeline = read_sentence_pipeline(checkpoint)
    return pipeline.pooling if pipeline is not None else Pooling.MEAN


def _checkpoint_tokenizer(checkpoint: Path, max_length: int, text_prefix: str) -> TextTokenizer:
    """The tokenizer of a checkpoint run by torch, as its export's: a sentence-transformers
    folder's is its transformer's, lower-casing for ``do_lower_case``."""
    from exporters.st_pipeline import read_sentence_pipeline, transformer_directory

    pipeline = read_sentence_pipeline(checkpoint)
    return TextTokenizer.from_directory(
        transformer_directory(checkpoint),
        max_length=max_length,
        text_prefix=text_prefix,
        lowercase=pipeline is not None and pipeline.do_lower_case,
    )


def _pooled_prompt_tokens(checkpoint: Path, tokenizer: TextTokenizer) -> int:
    """Leading tokens left out of pooling: the text prefix's, for a sentence-transformers
    pipeline whose Pooling excludes the prompt (``include_prompt`` false), else none."""
    from exporters.st_pipeline import read_sentence_pipeline

    pipeline = read_sentence_pipeline(checkpoint)
    if pipeline is None or pipeline.include_prompt:
        return 0
    return tokenizer.prefix_tokens()
