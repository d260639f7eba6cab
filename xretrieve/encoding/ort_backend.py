"""ONNX Runtime backend: CUDA execution provider with IO binding when a GPU is usable, the CPU
execution provider (one intra-op thread per physical core, threads that sleep rather than spin
while they wait, batches cut into length buckets) otherwise."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.core.devices import CUDA_PROVIDER
from xretrieve.core.errors import MissingDependencyError, XRetrieveError
from xretrieve.core.settings import Device
from xretrieve.encoding.batching import LengthBuckets

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
EMBEDDINGS = "embeddings"
LAYER_EMBEDDINGS = "layer_embeddings"

# What ONNX Runtime's CUDA allocator says when the device is full (BFCArena / cudaMalloc).
_OOM_MESSAGES = ("out of memory", "failed to allocate", "cudaerrormemoryallocation")


# Bits of the CUDA execution provider's ``sdpa_kernel`` option (onnxruntime's AttentionBackend):
# which fused attention kernels the Attention / MultiHeadAttention / PackedAttention operators
# may use. 0 lets ONNX Runtime choose.
SDPA_KERNELS = {
    "flash": 1,
    "efficient": 2,
    "trt_fused": 4,
    "cudnn_flash": 8,
    "math": 16,
}


@dataclass(frozen=True)
class OrtOptions:
    """Tuning of the ONNX Runtime backend.

    ``seq_bucket``: pad every batch's sequence axis up to a multiple of this many tokens (1 =
    off). Padding is masked, so the embeddings do not change; on a GPU fewer distinct shapes
    mean fewer kernel selections and arena reshuffles, at the cost of the added tokens.
    ``sdpa_kernel``: names from ``SDPA_KERNELS`` the CUDA provider may use for attention
    (empty = ONNX Runtime's choice). ``cuda_provider_options``: further CUDA execution provider
    options as ``(name, value)`` pairs, passed as given (ONNX Runtime rejects unknown names
    when the session is made). Both CUDA settings are ignored on the CPU.

    On the CPU only: ``cpu_buckets``, how the encoder cuts batches there (``LengthBuckets``:
    small batches of near-equal lengths, since every padded token costs its full compute; None
    = the token budget alone, as on a GPU). ``cpu_spinning``: whether idle intra-op threads spin
    (ONNX Runtime's default) or sleep; spinning threads take the cores from whatever else runs,
    the encoder's own tokenising thread included. The defaults were measured on a 2-core CPU
    (benchmarks/RESULTS.md, "CPU default path")."""

    seq_bucket: int = 1
    sdpa_kernel: tuple[str, ...] = ()
    cuda_provider_options: tuple[tuple[str, str], ...] = ()
    cpu_buckets: LengthBuckets | None = LengthBuckets()
    cpu_spinning: bool = False

    def __post_init__(self) -> None:
        if self.cpu_buckets is not None and not isinstance(self.cpu_buckets, LengthBuckets):
            raise XRetrieveError(
                f"cpu_buckets must be a LengthBuckets or None, not {self.cpu_buckets!r}"
            )
        if not isinstance(self.cpu_spinning, bool):
            raise XRetrieveError(f"cpu_spinning must be True or False, not {self.cpu_spinning!r}")
        if self.seq_bucket < 1:
            raise XRetrieveError(f"seq_bucket must be at least 1, not {self.seq_bucket}")
        wrong = [name for name in self.sdpa_kernel if name not in SDPA_KERNELS]
        if wrong:
            raise XRetrieveError(
                f"unknown attention kernel {wrong[0]!r}; choose from {', '.join(SDPA_KERNELS)}"
            )


def cuda_provider_options(device_id: int, options: OrtOptions) -> dict[str, str]:
    """The CUDA execution provider's options for ``device_id`` with ``options`` applied."""
    # Exact-size arena growth: batches vary in shape, and power-of-two growth wastes up to
    # half the memory that OOM retries need.
    provider = {"device_id": str(device_id), "arena_extend_strategy": "kSameAsRequested"}
    if options.sdpa_kernel:
        mask = 0
        for name in options.sdpa_kernel:
            mask |= SDPA_KERNELS[name]
        provider["sdpa_kernel"] = str(mask)
    provider.update({name: str(value) for name, value in options.cuda_provider_options})
    return provider


def pad_to_bucket(
    input_ids: np.ndarray, attention_mask: np.ndarray, bucket: int, pad_token_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[batch, seq]`` inputs padded on the right to ``seq`` rounded up to a multiple of
    ``bucket`` (padding id ``pad_token_id``, mask 0); unchanged when already a multiple."""
    seq = input_ids.shape[1]
    extra = -seq % bucket
    if extra == 0:
        return input_ids, attention_mask
    widths = ((0, 0), (0, extra))
    return (
        np.pad(input_ids, widths, constant_values=pad_token_id),
        np.pad(attention_mask, widths, constant_values=0),
    )


# Session config keys of ONNX Runtime (onnxruntime_session_options_config_keys.h).
ALLOW_SPINNING = "session.intra_op.allow_spinning"


def cpu_session_options(session_options: object, threads: int, options: OrtOptions) -> None:
    """Set ``session_options`` (an ``onnxruntime.SessionOptions``) up for the CPU execution
    provider: ``threads`` intra-op threads and one inter-op thread (the encoder graphs are one
    chain of layers: nothing to run side by side), sequential execution, and spinning as
    ``options.cpu_spinning`` says. Graph optimisation (all levels) and the memory arena and
    pattern planner (ONNX Runtime's defaults, kept) are set for every device."""
    ort = import_onnxruntime()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.add_session_config_entry(ALLOW_SPINNING, "1" if options.cpu_spinning else "0")


class CudaProviderUnavailable(XRetrieveError):
    """The CUDA execution provider was asked for but ONNX Runtime could not load it."""

    arguments = ("device", "backend")


def import_onnxruntime() -> onnxruntime:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime-gpu", "the ONNX Runtime backend") from None
    return onnxruntime


def physical_cores() -> int:
    """Physical cores this process may use: hyper-threads share one core's matmul units, so
    more intra-op threads than cores only adds contention."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


class OrtBackend:
    """An ``InferenceSession`` of an exported model (inputs ``input_ids``/``attention_mask``
    int64 ``[batch, seq]``, output ``embeddings`` float32 ``[batch, dim]`` and optionally
    ``layer_embeddings`` ``[batch, n_layers, dim]``).

    ``device`` CUDA: providers [CUDA, CPU]; inputs are copied to the GPU once per batch and
    outputs are bound on the GPU and copied back once per batch (IO binding). If ONNX Runtime
    falls back to the CPU provider, ``CudaProviderUnavailable`` is raised. ``device`` CPU: the
    CPU provider with ``threads`` intra-op threads (default: physical cores). ``options``:
    sequence bucketing and CUDA provider settings (``OrtOptions``); ``pad_token_id`` fills
    bucket padding."""

    def __init__(
        self,
        model_path: Path,
        *,
        device: Device = Device.CPU,
        device_id: int = 0,
        threads: int | None = None,
        options: OrtOptions | None = None,
        pad_token_id: int = 0,
    ) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        self.device = device
        self.device_id = device_id
        self.options = options or OrtOptions()
        self.pad_token_id = pad_token_id
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device is Device.CUDA:
            providers: list = [
                (CUDA_PROVIDER, cuda_provider_options(device_id, self.options)),
                CPU_PROVIDER,
            ]
        elif device is Device.CPU:
            providers = [CPU_PROVIDER]
            cpu_session_options(session_options, threads or physical_cores(), self.options)
        else:
            raise ValueError(f"an ONNX Runtime session runs on cuda or cpu, not {device}")
        self.session = _create_session(ort, Path(model_path), session_options, providers)
        self.provider = self.session.get_providers()[0]
        if device is Device.CUDA and self.provider != CUDA_PROVIDER:
            raise CudaProviderUnavailable(
                "ONNX Runtime could not load its CUDA execution provider (check that the CUDA "
                "and cuDNN libraries onnxruntime-gpu needs are installed); run with "
                "{device='cpu'} or {backend='torch'}"
            )
        outputs = {output.name: output for output in self.session.get_outputs()}
        if EMBEDDINGS not in outputs:
            raise XRetrieveError(f"{model_path}: the model has no '{EMBEDDINGS}' output")
        self._layer_output = LAYER_EMBEDDINGS in outputs
        dim = outputs[EMBEDDINGS].shape[-1]
        if not isinstance(dim, int):
            raise XRetrieveError(f"{model_path}: the '{EMBEDDINGS}' output has no fixed width")
        self.dim = dim
        self.n_layers = outputs[LAYER_EMBEDDINGS].shape[1] if self._layer_output else 1
        logger.info(
            "ONNX Runtime session on %s (%s)",
            self.provider,
            f"GPU {device_id}"
            if device is Device.CUDA
            else f"{session_options.intra_op_num_threads} threads",
        )

    @property
    def buckets(self) -> LengthBuckets | None:
        """How the encoder should cut batches for this session (``OrtOptions.cpu_buckets`` on
        the CPU, None on CUDA)."""
        return self.options.cpu_buckets if self.device is Device.CPU else None

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        names = [EMBEDDINGS, LAYER_EMBEDDINGS] if self._layer_output else [EMBEDDINGS]
        if self.options.seq_bucket > 1:
            input_ids, attention_mask = pad_to_bucket(
                input_ids, attention_mask, self.options.seq_bucket, self.pad_token_id
            )
        if self.device is Device.CUDA:
            outputs = self._run_bound(names, input_ids, attention_mask)
        else:
            outputs = self.session.run(
                names, {"input_ids": input_ids, "attention_mask": attention_mask}
            )
        return outputs[0], (outputs[1] if self._layer_output else None)

    def _run_bound(
        self, names: list[str], input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> list[np.ndarray]:
        ort = self._ort
        binding = self.session.io_binding()
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            value = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(array), "cuda", self.device_id
            )
            binding.bind_ortvalue_input(name, value)
        for name in names:
            binding.bind_output(name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def is_out_of_memory(self, error: BaseException) -> bool:
        message = str(error).lower()
        return any(text in message for text in _OOM_MESSAGES)

    def release_memory(self) -> None:
        # ONNX Runtime keeps its arena; a smaller batch reuses it, so nothing to free here.
        return None


def _create_session(
    ort: onnxruntime, model_path: Path, options: object, providers: list
) -> onnxruntime.InferenceSession:
    # onnxruntime-gpu logs two warnings when it falls back from CUDA to CPU; which provider ran
    # is reported by the caller instead. onnxruntime has no getter: 2 (warning) is its default.
    ort.set_default_logger_severity(3)
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own pybind types
        raise XRetrieveError(
            f"{model_path}: ONNX Runtime cannot load the model: {error}"
        ) from error
    finally:
        ort.set_default_logger_severity(2)
