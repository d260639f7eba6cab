"""Check an export against the torch float32 model it came from: input/output names, dynamic
axes, shapes, then values on padded batches of several lengths and two batch sizes.

As optimum's exporters do: every check runs, every failure is collected, and one typed error
names them all with the largest difference."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporters.manifest import (
    EMBEDDINGS,
    INPUT_NAMES,
    LAYER_EMBEDDINGS,
    Manifest,
    ValidationFigures,
    prompt_tokens_of,
    read_manifest,
)
from xretrieve.core.devices import ort_cuda_available
from xretrieve.core.errors import XRetrieveError
from xretrieve.core.settings import Device, Dtype, parse_device

if TYPE_CHECKING:
    import onnxruntime
    import torch

logger = logging.getLogger(__name__)

# Two batches of different sizes and padded lengths, so that both dynamic axes are exercised.
# The last text of the second batch is long enough to be truncated at max_length.
VALIDATION_BATCHES: tuple[tuple[str, ...], ...] = (
    (
        "The cat sat on the mat.",
        "Der Hund läuft in den Park und spielt mit dem Ball, während die Sonne scheint.",
        "le chat est sur la table",
        "Кошка спит на диване весь день.",
        "我们在中国的大城市里生活了很多年。",
        "a",
        "",
        "Ο ήλιος λάμπει πάνω από τη θάλασσα και τα παιδιά παίζουν στην παραλία όλη μέρα.",
    ),
    (
        "Hello!",
        "La rivière traverse la ville et les arbres sont verts au printemps.",
        " ".join(["The long river runs through the old city under many small bridges."] * 80),
    ),
)
# Mean/min cosine to torch float32 below which an export is an error. float32 graphs differ from
# torch only by fusion and summation order; fp16 by rounding (the bar: mean >= 0.999);
# int8 by the quantised weights and activations (mean >= 0.99).
MIN_MEAN_COSINE = {Dtype.FP32: 0.99999, Dtype.FP16: 0.999, Dtype.INT8: 0.99}
MIN_COSINE = {Dtype.FP32: 0.9999, Dtype.FP16: 0.99, Dtype.INT8: 0.95}


class ExportValidationError(XRetrieveError):
    """An export failed validation; ``failures`` lists every failed check and ``report`` holds
    the figures measured."""

    def __init__(self, failures: Sequence[str], report: ValidationReport | None) -> None:
        self.failures = tuple(failures)
        self.report = report
        figures = ""
        if report is not None and report.figures is not None:
            f = report.figures
            figures = (
                f" (min cosine {f.min_cosine:.6f}, mean cosine {f.mean_cosine:.6f}, "
                f"max abs diff {f.max_abs_diff:.3g} on {f.provider})"
            )
        super().__init__(f"export validation failed{figures}: " + "; ".join(self.failures))


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of ``validate_export``: ``figures`` (None when no batch could be run) and the
    failed checks (empty when the export is good)."""

    figures: ValidationFigures | None
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def tokenize_batches(
    tokenizer: Any,
    manifest: Manifest,
    batches: Sequence[Sequence[str]] = VALIDATION_BATCHES,
) -> list[dict[str, np.ndarray]]:
    """Each batch of texts as ONNX feeds: ``input_ids`` and ``attention_mask`` int64
    ``[batch, longest]``, with the manifest's text prefix, truncation and padding."""
    feeds = []
    for texts in batches:
        encoded = tokenizer(
            [manifest.text_prefix + text for text in texts],
            padding=True,
            truncation=True,
            max_length=manifest.max_length,
            return_tensors="np",
        )
        feeds.append({name: encoded[name].astype(np.int64) for name in INPUT_NAMES})
    return feeds


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of matching rows of ``(n, d)`` arrays; two zero rows count as identical."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("nd,nd->n", a, b)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    return np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-30))


def _is_symbolic(dim: Any) -> bool:
    return not dim.HasField("dim_value")


def _check_signature(model_path: Path, manifest: Manifest) -> list[str]:
    """Names, element types and dynamic axes of the graph's inputs and outputs."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    failures = []
    inputs = tuple(value.name for value in graph.input)
    if inputs != INPUT_NAMES:
        failures.append(f"inputs are {inputs}, expected {INPUT_NAMES}")
    for value in graph.input:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        if tensor.elem_type != onnx.TensorProto.INT64:
            failures.append(f"input {value.name} is not int64")
        if len(dims) != 2 or not all(_is_symbolic(dim) for dim in dims):
            failures.append(f"input {value.name} is not [batch, sequence] with dynamic axes")
    outputs = tuple(value.name for value in graph.output)
    if outputs != manifest.outputs:
        failures.append(f"outputs are {outputs}, expected {manifest.outputs}")
    expected_dims = {
        EMBEDDINGS: (None, manifest.dim),
        LAYER_EMBEDDINGS: (None, len(manifest.layers), manifest.dim),
    }
    for value in graph.output:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            failures.append(f"output {value.name} is not float32")
        expected = expected_dims.get(value.name)
        if expected is None:
            continue
        if len(dims) != len(expected) or not _is_symbolic(dims[0]):
            failures.append(
                f"output {value.name} does not have rank {len(expected)} and a dynamic batch axis"
            )
            continue
        for dim, size in zip(dims[1:], expected[1:], strict=True):
            if dim.HasField("dim_value") and dim.dim_value != size:
                failures.append(
                    f"output {value.name} has a static size {dim.dim_value}, expected {size}"
                )
    return failures


def open_session(model_path: Path, device: Device = Device.CPU) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on ``device`` (CPU or CUDA); CUDA falls back to the CPU
    execution provider where no GPU is usable (``session.get_providers()`` says which ran)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # onnxruntime-gpu logs a warning when it falls back to the CPU; the providers list says it.
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device is Device.CUDA and ort_cuda_available():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(model_path), options, providers=providers)


def _reference_outputs(
    reference: torch.nn.Module, feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        result = reference(
            torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        )
    if isinstance(result, torch.Tensor):
        result = (result,)
    return [tensor.float().cpu().numpy() for tensor in result]


def compare_outputs(
    expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], names: Sequence[str]
) -> tuple[np.ndarray, float, list[str]]:
    """Row cosines (over every output, ``layer_embeddings`` split by layer), the largest
    absolute difference, and the shape mismatches, of one batch."""
    cosines, max_abs_diff, failures = [], 0.0, []
    for name, want, got in zip(names, expected, actual, strict=True):
        if got.shape != want.shape:
            failures.append(f"output {name} has shape {got.shape}, torch gives {want.shape}")
            continue
        if not np.all(np.isfinite(got)):
            failures.append(f"output {name} holds NaN or infinite values")
            continue
        flat_want = want.reshape(-1, want.shape[-1])
        flat_got = got.reshape(-1, got.shape[-1]).astype(np.float32)
        cosines.append(_row_cosines(flat_want, flat_got))
        max_abs_diff = max(max_abs_diff, float(np.max(np.abs(flat_want - flat_got))))
    joined = np.concatenate(cosines) if cosines else np.zeros(0)
    return joined, max_abs_diff, failures


def validate_export(
    export_dir: Path | str,
    checkpoint_dir: Path | str,
    *,
    device: Device | str = Device.AUTO,
    reference: torch.nn.Module | None = None,
    batches: Sequence[Sequence[str]] = VALIDATION_BATCHES,
    check_source_hash: bool = True,
) -> ValidationReport:
    """Compare the export in ``export_dir`` with the torch float32 model of ``checkpoint_dir``.

    Checks, in order: the checkpoint's content hash is the manifest's ``source_hash``; the
    graph's inputs (``input_ids``, ``attention_mask`` int64 ``[batch, sequence]``, both axes
    dynamic) and outputs (the manifest's names, float32, dynamic batch axis); then, for each
    batch of ``batches`` tokenised with the export's own tokenizer, output shapes and values:
    row cosines to torch must reach ``MIN_MEAN_COSINE``/``MIN_COSINE`` for the export's dtype.
    ``device``: CPU, CUDA, or AUTO (CUDA for fp16 exports where available, else CPU; int8
    exports are for the CPU execution provider).
    ``reference``: the torch module to compare with (default: ``wrapper.sentence_encoder`` of
    the checkpoint with the manifest's settings, its sentence-transformers pipeline included). Raises ``ExportValidationError`` naming every
    failure; returns the report when all checks pass."""
    from transformers import AutoTokenizer

    from xretrieve.core.cache import content_hash

    export_dir, device = Path(export_dir), parse_device(device)
    manifest = read_manifest(export_dir)
    model_path = export_dir / manifest.model_file
    failures = _check_signature(model_path, manifest)
    source_hash = content_hash(Path(checkpoint_dir)) if check_source_hash else manifest.source_hash
    if source_hash != manifest.source_hash:
        failures.append(
            f"{checkpoint_dir} has content hash {source_hash}, the export was made from "
            f"{manifest.source_hash}"
        )
        # Another checkpoint may not even share the vocabulary: comparing values means nothing.
        raise ExportValidationError(failures, ValidationReport(None, tuple(failures)))
    if reference is None:
        from exporters.wrapper import sentence_encoder

        reference = sentence_encoder(
            checkpoint_dir,
            layers=tuple(manifest.layers),
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            projection=manifest.projection is not None,
            prompt_tokens=prompt_tokens_of(manifest),
        )
    reference.eval()
    if device is Device.AUTO:
        device = Device.CUDA if manifest.dtype is Dtype.FP16 else Device.CPU
    try:
        session = open_session(model_path, device)
    except Exception as error:  # onnxruntime raises its own untyped errors
        failures.append(f"ONNX Runtime cannot load {model_path.name}: {error}")
        raise ExportValidationError(failures, ValidationReport(None, tuple(failures))) from None
    provider = session.get_providers()[0]
    tokenizer = AutoTokenizer.from_pretrained(export_dir, local_files_only=True)
    feeds = tokenize_batches(tokenizer, manifest, batches)
    output_names = [output.name for output in session.get_outputs()]
    all_cosines, max_abs_diff = [], 0.0
    for feed in feeds:
        try:
            expected = _reference_outputs(reference, feed)
        except (IndexError, RuntimeError) as error:
            failures.append(f"the torch reference failed on the validation batch: {error}")
            break
        try:
            actual = session.run(output_names, feed)
        except Exception as error:  # onnxruntime raises its own untyped errors
            failures.append(
                f"ONNX Runtime failed on a batch of shape {feed['input_ids'].shape}: {error}"
            )
            continue
        if len(actual) != len(expected):
            failures.append(f"the graph has {len(actual)} outputs, torch gives {len(expected)}")
            continue
        cosines, batch_diff, batch_failures = compare_outputs(expected, actual, output_names)
        all_cosines.append(cosines)
        max_abs_diff = max(max_abs_diff, batch_diff)
        failures += batch_failures
    figures = None
    cosines = np.concatenate(all_cosines) if all_cosines else np.zeros(0)
    if cosines.size:
        figures = ValidationFigures(
            min_cosine=float(cosines.min()),
            mean_cosine=float(cosines.mean()),
            max_abs_diff=max_abs_diff,
            lengths=tuple(int(n) for feed in feeds for n in feed["attention_mask"].sum(axis=1)),
            batch_sizes=tuple(int(feed["input_ids"].shape[0]) for feed in feeds),
            provider=provider,
        )
        if figures.mean_cosine < MIN_MEAN_COSINE[manifest.dtype]:
            failures.append(
                f"mean cosine to torch float32 is {figures.mean_cosine:.6f}, below "
                f"{MIN_MEAN_COSINE[manifest.dtype]} for {manifest.dtype.value}"
            )
        if figures.min_cosine < MIN_COSINE[manifest.dtype]:
            failures.append(
                f"min cosine to torch float32 is {figures.min_cosine:.6f}, below "
                f"{MIN_COSINE[manifest.dtype]} for {manifest.dtype.value}"
            )
    report = ValidationReport(figures=figures, failures=tuple(failures))
    if failures:
        raise ExportValidationError(failures, report)
    logger.info("validation passed: %s", figures)
    return report
