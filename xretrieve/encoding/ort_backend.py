"""ONNX Runtime backend: CUDA execution provider with IO binding when a GPU is usable, the CPU
execution provider (one intra-op thread per physical core) otherwise."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xretrieve.errors import MissingDependencyError, XRetrieveError

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
EMBEDDINGS = "embeddings"
LAYER_EMBEDDINGS = "layer_embeddings"

# What ONNX Runtime's CUDA allocator says when the device is full (BFCArena / cudaMalloc).
_OOM_MESSAGES = ("out of memory", "failed to allocate", "cudaerrormemoryallocation")


class CudaProviderUnavailable(XRetrieveError):
    """The CUDA execution provider was asked for but ONNX Runtime could not load it."""


def import_onnxruntime() -> onnxruntime:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("onnxruntime-gpu", "the ONNX Runtime backend") from None
    return onnxruntime


def ort_cuda_usable() -> bool:
    """This onnxruntime build has the CUDA provider and a CUDA GPU is visible: to torch, or, with
    a CPU-only torch build, as an NVIDIA device node. Whether ONNX Runtime can really load its
    CUDA provider shows only when a session is made (``CudaProviderUnavailable``)."""
    ort = import_onnxruntime()
    if CUDA_PROVIDER not in ort.get_available_providers():
        return False
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    return Path("/dev/nvidia0").exists()


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

    ``device`` "cuda": providers [CUDA, CPU]; inputs are copied to the GPU once per batch and
    outputs are bound on the GPU and copied back once per batch (IO binding). If ONNX Runtime
    falls back to the CPU provider, ``CudaProviderUnavailable`` is raised. ``device`` "cpu": the
    CPU provider with ``threads`` intra-op threads (default: physical cores)."""

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "cpu",
        device_id: int = 0,
        threads: int | None = None,
    ) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        self.device = device
        self.device_id = device_id
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device == "cuda":
            providers: list = [
                (
                    CUDA_PROVIDER,
                    # Exact-size arena growth: batches vary in shape, and power-of-two growth
                    # wastes up to half the memory that OOM retries need.
                    {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"},
                ),
                CPU_PROVIDER,
            ]
        elif device == "cpu":
            providers = [CPU_PROVIDER]
            options.intra_op_num_threads = threads or physical_cores()
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        else:
            raise XRetrieveError(f"unknown device {device!r} (cuda or cpu)")
        self.session = _create_session(ort, Path(model_path), options, providers)
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA_PROVIDER:
            raise CudaProviderUnavailable(
                "ONNX Runtime could not load its CUDA execution provider (check that the CUDA "
                "and cuDNN libraries onnxruntime-gpu needs are installed); run with --device cpu "
                "or --backend torch"
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
            f"GPU {device_id}" if device == "cuda" else f"{options.intra_op_num_threads} threads",
        )

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        names = [EMBEDDINGS, LAYER_EMBEDDINGS] if self._layer_output else [EMBEDDINGS]
        if self.device == "cuda":
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
