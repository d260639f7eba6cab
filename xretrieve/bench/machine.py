"""What a benchmark records about the machine and the run: peak host RSS (sampled in a thread),
peak GPU memory, CPU/GPU description, device synchronisation, and the parsing of name lists."""

from __future__ import annotations

import logging
import os
import platform
import resource
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.settings import Device

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)


# How often the memory sampler looks: short enough to catch a batch's peak on a GPU.
SAMPLE_SECONDS = 0.005


def parse_names(value: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """Comma-separated ``value`` -> names, each one of ``allowed``; else ``XRetrieveError``."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    wrong = [name for name in names if name not in allowed]
    if wrong or not names:
        raise XRetrieveError(
            f"invalid {what} {value!r}: give a comma-separated list of {', '.join(allowed)}"
        )
    return names


def peak_rss_bytes() -> int:
    """Peak resident memory of this process. On Linux VmHWM of /proc/self/status: getrusage's
    ru_maxrss also counts the parent's resident set at fork time, before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()
    return pages * os.sysconf("SC_PAGE_SIZE")


class MemoryPeak:
    """Peak host RSS and (with ``cuda``) peak device memory in use, sampled every 5 ms in a
    thread between construction and ``stop()``. The whole device is watched because ONNX
    Runtime's arena is invisible to torch's allocator statistics: run nothing else on it."""

    def __init__(self, cuda: bool) -> None:
        self._cuda = None
        if cuda:
            import torch

            self._cuda = torch.cuda
            free, total = torch.cuda.mem_get_info()
            self.gpu_baseline = total - free
            self.gpu_peak = self.gpu_baseline
        self.rss_peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_peak = max(self.rss_peak, _rss_bytes())
            if self._cuda is not None:
                free, total = self._cuda.mem_get_info()
                self.gpu_peak = max(self.gpu_peak, total - free)
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> tuple[int, int | None]:
        """``(peak host RSS bytes, peak GPU bytes above the starting level or None)``."""
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, _rss_bytes())
        gpu = self.gpu_peak - self.gpu_baseline if self._cuda is not None else None
        return self.rss_peak, gpu


def machine_info() -> dict[str, Any]:
    """Versions, CPU, GPU and load averages (other processes skew CPU figures)."""
    import faiss
    import onnxruntime
    import torch
    import transformers

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "faiss": faiss.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _synchronize(device: Device) -> None:
    if device is Device.CUDA:
        import torch

        torch.cuda.synchronize()
