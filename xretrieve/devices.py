"""Whether a CUDA GPU is usable: the one place every module asks.

- ``torch_cuda_available()``: torch is installed and sees a CUDA GPU (the torch kNN engine, the
  torch encoder backend, the trainer, the benchmarks).
- ``ort_cuda_available()``: this onnxruntime build has the CUDA execution provider and a GPU is
  visible (to torch, or, with a CPU-only torch, as an NVIDIA device node). onnxruntime-gpu lists
  the provider even without a GPU, so the provider list alone does not answer; whether ONNX
  Runtime can really load the provider shows only when a session is made.

Neither raises: a missing package means no GPU for that path.
"""

from __future__ import annotations

from pathlib import Path

CUDA_PROVIDER = "CUDAExecutionProvider"


def torch_cuda_available() -> bool:
    """torch is importable and ``torch.cuda.is_available()``."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def ort_cuda_available() -> bool:
    """onnxruntime offers the CUDA provider and a CUDA GPU is visible."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if CUDA_PROVIDER not in ort.get_available_providers():
        return False
    return torch_cuda_available() or Path("/dev/nvidia0").exists()
