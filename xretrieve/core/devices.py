"""Whether a CUDA GPU is usable: the one place every module asks.

- ``cuda_device_count()``: the CUDA GPUs this process can use, asked of the NVIDIA driver
  itself (``cuInit`` and ``cuDeviceGetCount`` of ``libcuda``, as ``torch.cuda.is_available``
  does underneath, so ``CUDA_VISIBLE_DEVICES`` applies); 0 without a driver. It imports no
  framework: importing torch only to learn that a machine has no GPU took seconds of every
  command's start-up.
- ``torch_cuda_available()``: a GPU is there and torch, installed with CUDA, sees it (the torch
  kNN engine, the torch encoder backend, the trainer, the benchmarks). torch is imported only
  when the driver shows a GPU.
- ``ort_cuda_available()``: a GPU is there and this onnxruntime build has the CUDA execution
  provider. onnxruntime-gpu lists the provider even without a GPU, so the provider list alone
  does not answer; whether ONNX Runtime can really load the provider shows only when a session
  is made.

None raises: a missing package or driver means no GPU for that path.
"""

from __future__ import annotations

import ctypes
import functools
import sys

CUDA_PROVIDER = "CUDAExecutionProvider"
_DRIVER_LIBRARIES = {"win32": ("nvcuda.dll",), "linux": ("libcuda.so.1", "libcuda.so")}


@functools.cache
def cuda_device_count() -> int:
    """CUDA GPUs the NVIDIA driver lets this process use; 0 where there is no driver, no GPU,
    or the driver fails to initialise. Asked once per process."""
    for name in _DRIVER_LIBRARIES.get(sys.platform, ()):
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def torch_cuda_available() -> bool:
    """A CUDA GPU is there, torch is importable and ``torch.cuda.is_available()``."""
    if cuda_device_count() == 0:
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def ort_cuda_available() -> bool:
    """A CUDA GPU is there and onnxruntime offers the CUDA execution provider."""
    if cuda_device_count() == 0:
        return False
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return CUDA_PROVIDER in ort.get_available_providers()
