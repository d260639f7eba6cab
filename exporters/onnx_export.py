"""Checkpoint directory -> export directory: ONNX graph of the pooled encoder, optimised and
fp16-converted or int8-quantised (``auto``: chosen on held-out data), tokenizer files, and a
manifest with the validation figures.

The steps, each its own function: load and check the checkpoint, trace the ``PooledEncoder`` to
ONNX (TorchScript exporter), optimise/convert, save the tokenizer, validate against torch,
write the manifest. All of it is built in a temporary directory that becomes ``out_dir`` only
when validation passed."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporters.checkpoint import (
    check_tokenizer,
    check_weights,
    num_hidden_layers,
    read_checkpoint_config,
    read_projection_info,
)
from exporters.config import ExportConfig, resolve_layers
from exporters.manifest import (
    EMBEDDINGS,
    INPUT_NAMES,
    LAYER_EMBEDDINGS,
    MANIFEST_NAME,
    MODEL_NAME,
    Manifest,
    format_version_of,
    write_manifest,
)
from exporters.st_pipeline import (
    check_pipeline_settings,
    lowercase_tokenizer,
    prompt_token_count,
    read_sentence_pipeline,
    transformer_directory,
)
from xretrieve.core.devices import ort_cuda_available
from xretrieve.core.errors import InputError, XRetrieveError
from xretrieve.core.integrity import DIRECTORY_RECORD
from xretrieve.core.outputs import OutputOwner
from xretrieve.core.positions import usable_positions
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.settings import Device, Dtype, Pooling

if TYPE_CHECKING:
    import torch

    from exporters.dtype_choice import DtypeChoice

logger = logging.getLogger(__name__)

_STEPS = ("load", "trace", "optimize", "tokenizer", "validate")
# Tokenizers without a limit report model_max_length as this sentinel (int(1e30)).
_NO_LIMIT = 10**12


def export_checkpoint(
    checkpoint_dir: Path | str,
    out_dir: Path | str,
    config: ExportConfig | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Export a Hugging Face encoder checkpoint to ``out_dir`` and return its ``Manifest``.

    ``out_dir`` receives ``model.onnx`` (plus ``model.onnx.data`` over 2 GiB), the tokenizer
    files and ``manifest.json``, atomically: on any error nothing is left at ``out_dir`` (an
    existing export there is replaced only on success; anything else there is refused, see
    ``export_disowns``). The graph's inputs are ``input_ids``
    and ``attention_mask`` int64 ``[batch, sequence]``; its output ``embeddings`` float32
    ``[batch, dim]`` (the first of ``config.layers``), plus ``layer_embeddings`` float32
    ``[batch, n_layers, dim]`` when several layers are asked for.

    Raises ``InputError`` for a bad checkpoint (missing files, remote code, pickle-only weights,
    unsupported architecture), ``XRetrieveError`` for a bad setting (layer out of range,
    max_length beyond the position embeddings), ``FusionError`` when the optimizer did not fuse
    attention, and ``ExportValidationError`` (with the figures) when the export does not match
    torch."""
    from exporters.validate import validate_export
    from exporters.wrapper import sentence_encoder
    from xretrieve.core.cache import content_hash
    from xretrieve.core.files import atomic_directory
    from xretrieve.core.outputs import check_output_path

    checkpoint_dir = Path(checkpoint_dir).resolve()
    out_dir = check_output_path(
        Path(out_dir),
        directory=True,
        option="out_dir",
        inputs=[checkpoint_dir],
        owner=EXPORT_OUTPUT,
    )
    config = config or ExportConfig()
    report = progress or no_progress
    started = time.perf_counter()

    def step(name: str) -> None:
        report("export", _STEPS.index(name), len(_STEPS))
        logger.info(
            "export %s: %s (%.1f s)", checkpoint_dir.name, name, time.perf_counter() - started
        )

    if config.packed and not ort_cuda_available():
        raise XRetrieveError(
            "a packed export runs (and is validated) on the CUDA execution provider only, and "
            "no usable CUDA GPU is here"
        )
    pipeline = read_sentence_pipeline(checkpoint_dir)
    checkpoint_config = read_checkpoint_config(checkpoint_dir)
    check_weights(checkpoint_dir)
    check_tokenizer(checkpoint_dir)
    # Checked before the (possibly slow) model load; again below against the loaded config.
    depth = num_hidden_layers(checkpoint_config)
    early_layers = resolve_layers(config.layers, depth)
    if pipeline is not None:
        check_pipeline_settings(
            pipeline,
            pooling=config.pooling,
            normalize=config.normalize,
            layers=early_layers,
            num_layers=depth,
            projection=config.projection,
        )
    step("load")  # the first progress report comes after the checks that refuse bad input
    source_hash = content_hash(checkpoint_dir)
    text_prefix, mining_threshold = _prefix_and_threshold(checkpoint_dir, config)
    tokenizer = _load_tokenizer(transformer_directory(checkpoint_dir))
    if pipeline is not None and pipeline.do_lower_case:
        lowercase_tokenizer(tokenizer.backend_tokenizer)
    prompt_tokens = 0
    if pipeline is not None and not pipeline.include_prompt:
        prompt_tokens = prompt_token_count(tokenizer.backend_tokenizer, text_prefix)
    wrapper = sentence_encoder(
        checkpoint_dir,
        layers=config.layers,
        pooling=config.pooling,
        normalize=config.normalize,
        projection=config.projection,
        prompt_tokens=prompt_tokens,
        attn_implementation="eager",
    ).eval()
    hf_config, layers = wrapper.config, wrapper.layers
    max_length = _resolve_max_length(
        config.max_length, tokenizer, hf_config, pipeline.max_seq_length if pipeline else None
    )
    if tokenizer.pad_token_id is None:
        raise InputError(checkpoint_dir, "the tokenizer has no padding token")
    projection_info = None
    if config.projection:
        projection_info = read_projection_info(checkpoint_dir, hf_config.hidden_size)
        _check_projection_fits(projection_info, layers, wrapper.pooling, depth)
    st_record = None
    if pipeline is not None:
        st_record = {**pipeline.to_json(), "prompt_tokens": prompt_tokens}
    outputs = (EMBEDDINGS,) if len(layers) == 1 else (EMBEDDINGS, LAYER_EMBEDDINGS)

    with (
        atomic_directory(out_dir) as staging,
        tempfile.TemporaryDirectory(prefix="xretrieve-export-") as scratch,
    ):
        step("trace")
        raw_path = Path(scratch) / "raw.onnx"
        example = tokenizer(
            ["a short one", "and a somewhat longer second sentence"],
            padding=True,
            return_tensors="pt",
        )
        trace_to_onnx(wrapper, raw_path, example, outputs, config.opset)

        step("optimize")
        graph = _GraphSettings(
            model_type=hf_config.model_type,
            num_heads=hf_config.num_attention_heads,
            hidden_size=hf_config.hidden_size,
            layers_run=max(layers),
        )
        dtype, fusion, choice = build_graph(
            raw_path, staging, Path(scratch), graph, config, tokenizer, max_length, text_prefix
        )

        step("tokenizer")
        tokenizer.model_max_length = max_length
        tokenizer.save_pretrained(staging)

        manifest = Manifest(
            source_checkpoint=str(checkpoint_dir),
            source_hash=source_hash,
            model_type=hf_config.model_type,
            num_hidden_layers=hf_config.num_hidden_layers,
            hidden_size=hf_config.hidden_size,
            num_attention_heads=hf_config.num_attention_heads,
            layers=layers,
            pooling=wrapper.pooling,
            normalize=config.normalize,
            dtype=dtype,
            opset=config.opset,
            optimized=config.optimize,
            text_prefix=text_prefix,
            max_length=max_length,
            dim=wrapper.dim,
            pad_token_id=int(tokenizer.pad_token_id),
            inputs=INPUT_NAMES,
            outputs=outputs,
            fusion=fusion,
            versions=_library_versions(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            onnx_files=tuple(
                sorted(path.name for path in staging.iterdir() if path.name.startswith(MODEL_NAME))
            ),
            format_version=format_version_of(st_record),
            projection=projection_info,
            mining_threshold=mining_threshold,
            dtype_choice=choice.to_json() if choice is not None else None,
            packed=config.packed,
            sentence_transformers=st_record,
        )
        write_manifest(staging, manifest)

        step("validate")
        validation = validate_export(
            staging, checkpoint_dir, reference=wrapper, check_source_hash=False
        )
        manifest = dataclasses.replace(manifest, validation=validation.figures)
        write_manifest(staging, manifest)
        _make_readable(staging)
    report("export", len(_STEPS), len(_STEPS))
    logger.info(
        "exported %s to %s in %.1f s", checkpoint_dir, out_dir, time.perf_counter() - started
    )
    return manifest


# What an export directory holds besides manifest.json and its ONNX files: the files a
# tokenizer's save_pretrained writes, and the integrity record of a cached export.
_TOKENIZER_FILE_PREFIXES = ("tokenizer", "special_tokens_map", "added_tokens", "chat_template")
_TOKENIZER_FILE_NAMES = frozenset({"vocab.txt", "vocab.json", "merges.txt"})
_TOKENIZER_FILE_SUFFIXES = (".model",)


def export_disowns(out_dir: Path) -> str | None:
    """None when the non-empty ``out_dir`` is an earlier export holding only what an export
    writes (so replacing it loses nothing), else why it is not: no export manifest, an
    unreadable one, or files no export writes. The ``OutputOwner`` of ``export --out``."""
    from exporters.manifest import read_manifest

    if not (Path(out_dir) / MANIFEST_NAME).is_file():
        return f"no export {MANIFEST_NAME}"
    try:
        manifest = read_manifest(out_dir)
    except InputError as error:
        return f"its manifest is unreadable: {error.detail}"
    foreign = [
        entry.name
        for entry in sorted(Path(out_dir).iterdir())
        if not (entry.is_file() and _is_export_file(entry.name, manifest.onnx_files))
    ]
    if foreign:
        return (
            f"it also holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            "which an export does not write"
        )
    return None


EXPORT_OUTPUT = OutputOwner("export", export_disowns)


def _is_export_file(name: str, onnx_files: tuple[str, ...]) -> bool:
    return (
        name in (MANIFEST_NAME, DIRECTORY_RECORD)
        or name in onnx_files
        or name.startswith(MODEL_NAME)
        or name.startswith(_TOKENIZER_FILE_PREFIXES)
        or name in _TOKENIZER_FILE_NAMES
        or name.endswith(_TOKENIZER_FILE_SUFFIXES)
    )


def _prefix_and_threshold(
    checkpoint_dir: Path, config: ExportConfig
) -> tuple[str, dict[str, Any] | None]:
    """The text prefix and calibrated threshold of the export: the config's when given, else the
    checkpoint's own (``read_model_settings``). A checkpoint's threshold holds only with its own
    prefix and without a projection head."""
    from exporters.model_settings import read_model_settings

    own = read_model_settings(checkpoint_dir)
    prefix = own.text_prefix if config.text_prefix is None else config.text_prefix
    threshold = config.mining_threshold
    if threshold is None and prefix == own.text_prefix and not config.projection:
        threshold = own.mining_threshold
    return prefix, dict(threshold) if threshold is not None else None


@dataclass(frozen=True)
class _GraphSettings:
    """What the optimizer needs to know of the model."""

    model_type: str
    num_heads: int
    hidden_size: int
    layers_run: int


def resolve_dtype(dtype: Dtype, device: Device = Device.AUTO) -> Dtype:
    """AUTO becomes FP16 where ONNX Runtime can use a CUDA GPU, unless the graph is for the
    ``device`` CPU; on the CPU it stays AUTO, which ``build_graph`` settles between INT8 and
    FP32 on the held-out parallel set."""
    if dtype is Dtype.AUTO and device is not Device.CPU and ort_cuda_available():
        return Dtype.FP16
    return dtype


def build_graph(
    raw_path: Path,
    staging: Path,
    scratch: Path,
    graph: _GraphSettings,
    config: ExportConfig,
    tokenizer: Any,
    max_length: int,
    text_prefix: str,
) -> tuple[Dtype, dict[str, int], DtypeChoice | None]:
    """Write ``staging/model.onnx`` (and its external data) from the traced float32 graph at
    ``raw_path``: optimised, then fp16-converted (and packed), or int8-quantised. Returns the
    graph's dtype, its fused-operator counts and, for AUTO on the CPU, the held-out comparison
    that chose between int8 and fp32 (both built in ``scratch``)."""
    from exporters.int8_activations import calibration_feeds, calibration_texts
    from exporters.optimize import convert_to_packed, optimize_graph, quantize_int8

    dtype = resolve_dtype(config.dtype, config.device)
    settings = dict(
        model_type=graph.model_type,
        num_heads=graph.num_heads,
        hidden_size=graph.hidden_size,
        layers_run=graph.layers_run,
        optimize=config.optimize,
    )
    if dtype in (Dtype.FP16, Dtype.FP32):
        fusion = optimize_graph(raw_path, staging / MODEL_NAME, dtype=dtype, **settings)
        if config.packed:
            fusion = convert_to_packed(staging / MODEL_NAME, graph.layers_run)
        return dtype, fusion, None
    # INT8, or AUTO on the CPU: quantise the optimised float32 graph. Each graph gets a
    # directory of its own so that its external-data file keeps the name the graph records.
    fp32_dir, int8_dir = scratch / "fp32", scratch / "int8"
    fp32_dir.mkdir()
    int8_dir.mkdir()
    fp32_fusion = optimize_graph(raw_path, fp32_dir / MODEL_NAME, dtype=Dtype.FP32, **settings)
    int8_fusion = quantize_int8(
        fp32_dir / MODEL_NAME,
        int8_dir / MODEL_NAME,
        per_channel=config.int8_per_channel,
        calibration=calibration_feeds(tokenizer, calibration_texts(), text_prefix, max_length),
    )
    choice = None
    if dtype is Dtype.AUTO:
        from exporters.dtype_choice import choose_cpu_dtype

        choice = choose_cpu_dtype(
            fp32_dir / MODEL_NAME,
            int8_dir / MODEL_NAME,
            tokenizer,
            text_prefix=text_prefix,
            max_length=max_length,
        )
        dtype = choice.chosen
    chosen_dir, fusion = (int8_dir, int8_fusion) if dtype is Dtype.INT8 else (fp32_dir, fp32_fusion)
    for path in chosen_dir.iterdir():
        shutil.move(str(path), str(staging / path.name))
    return dtype, fusion if config.optimize else {}, choice


def _check_projection_fits(
    info: dict[str, Any], layers: tuple[int, ...], pooling: Pooling, n_layers: int
) -> None:
    """The head was trained on one layer's pooled output; other layers or pooling would feed it
    vectors it never saw."""
    trained_layer = resolve_layers((int(info.get("layer", -1)),), n_layers)[0]
    trained_pooling = info.get("pooling", "mean")
    if layers != (trained_layer,) or pooling.value != trained_pooling:
        raise XRetrieveError(
            f"the projection head was trained on layer {trained_layer} with {trained_pooling} "
            f"pooling; export it with exactly that layer and pooling (asked: layers "
            f"{list(layers)}, {pooling.value} pooling)"
        )


def trace_to_onnx(
    wrapper: torch.nn.Module,
    path: Path,
    example: Any,
    outputs: tuple[str, ...],
    opset: int,
) -> None:
    """Trace ``wrapper`` (a ``PooledEncoder``) with the TorchScript exporter into a float32 graph
    at ``path`` with dynamic batch and sequence axes. ``example`` holds ``input_ids`` and
    ``attention_mask`` tensors; it must contain padding so that the traced mask arithmetic is
    the general one."""
    import torch

    dynamic_axes: dict[str, dict[int, str]] = {
        name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES
    }
    dynamic_axes.update({name: {0: "batch"} for name in outputs})
    inputs = (example["input_ids"].long(), example["attention_mask"].long())
    with warnings.catch_warnings():
        # Tracer warnings about Python-level shape arithmetic in transformers' code: the
        # validation on other batch sizes and lengths is what shows whether they matter.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper.eval(),
            inputs,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _make_readable(directory: Path) -> None:
    # Temporary files and directories are created private (0600/0700); an export is shared
    # like any other output, so give it the usual permissions under the process umask.
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _load_tokenizer(checkpoint_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            checkpoint_dir, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(checkpoint_dir, f"cannot load the tokenizer: {error}") from error


def _resolve_max_length(
    requested: int | None, tokenizer: Any, hf_config: Any, pipeline_limit: int | None = None
) -> int:
    """Tokens per text: ``requested``, else the sentence-transformers pipeline's
    ``max_seq_length`` (``pipeline_limit``), else the tokenizer's ``model_max_length``; never
    more than the model's position embeddings allow."""
    positions = getattr(hf_config, "max_position_embeddings", None)
    usable = usable_positions(
        hf_config.model_type, positions, getattr(hf_config, "pad_token_id", None)
    )
    if requested is not None:
        if usable is not None and requested > usable:
            raise XRetrieveError(
                f"max_length {requested} exceeds the {usable} positions the model has"
            )
        return requested
    limit = pipeline_limit or getattr(tokenizer, "model_max_length", None)
    candidates = [value for value in (limit, usable) if value is not None and value < _NO_LIMIT]
    if not candidates:
        raise XRetrieveError("neither tokenizer nor config gives a maximum length: set max_length")
    return int(min(candidates))


def _library_versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "xretrieve"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            # onnxruntime is installed as onnxruntime-gpu (or -openvino, ...).
            versions[package] = _module_version(package)
    return versions


def _module_version(package: str) -> str:
    import importlib

    try:
        return str(importlib.import_module(package).__version__)
    except (ImportError, AttributeError):
        return "unknown"
