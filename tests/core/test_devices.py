"""The one GPU check: asked of the NVIDIA driver without importing torch or onnxruntime; a missing
driver, package or provider means no GPU, never an exception."""

from __future__ import annotations

import builtins
import ctypes
import subprocess
import sys
import types
from pathlib import Path

import pytest

from xretrieve.core import devices

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def driver(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A fake ``libcuda``: ``init`` is cuInit's result, ``count`` the GPUs it reports."""
    fake = types.SimpleNamespace(init=0, count=2, loaded=[])

    def device_count(pointer) -> int:  # noqa: ANN001 - a ctypes pointer
        pointer._obj.value = fake.count
        return 0

    def load(name: str) -> types.SimpleNamespace:
        fake.loaded.append(name)
        return types.SimpleNamespace(cuInit=lambda flags: fake.init, cuDeviceGetCount=device_count)

    monkeypatch.setattr(devices.sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", load)
    devices.cuda_device_count.cache_clear()
    yield fake
    devices.cuda_device_count.cache_clear()


def test_the_driver_is_asked_once(driver: types.SimpleNamespace) -> None:
    assert devices.cuda_device_count() == 2
    assert devices.cuda_device_count() == 2 and driver.loaded == ["libcuda.so.1"]


def test_a_driver_that_fails_to_initialise_means_no_gpu(driver: types.SimpleNamespace) -> None:
    driver.init = 100  # CUDA_ERROR_NO_DEVICE
    assert devices.cuda_device_count() == 0
    assert devices.torch_cuda_available() is False and devices.ort_cuda_available() is False


def test_no_driver_means_no_gpu_and_no_framework_import(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    devices.cuda_device_count.cache_clear()
    imported: list[str] = []
    real_import = builtins.__import__

    def recording(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", recording)
    try:
        assert devices.cuda_device_count() == 0
        assert devices.torch_cuda_available() is False
        assert devices.ort_cuda_available() is False
    finally:
        devices.cuda_device_count.cache_clear()
    assert not {"torch", "onnxruntime"} & set(imported)


def test_missing_packages_mean_no_gpu(
    driver: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name in ("torch", "onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    assert devices.torch_cuda_available() is False
    assert devices.ort_cuda_available() is False


def test_ort_needs_the_provider_and_a_gpu(
    driver: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    assert devices.ort_cuda_available() is False
    fake.get_available_providers = lambda: [devices.CUDA_PROVIDER, "CPUExecutionProvider"]
    assert devices.ort_cuda_available() is True
    driver.count = 0
    devices.cuda_device_count.cache_clear()
    assert devices.ort_cuda_available() is False


def test_the_driver_agrees_with_torch() -> None:
    """On this machine, with its real driver (or none): a CUDA build of torch counts the same
    GPUs; asking imports neither torch nor onnxruntime (run in a fresh interpreter)."""
    code = (
        "import sys; from xretrieve.core.devices import cuda_device_count as c; n = c(); "
        "print(n, sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    count, imported = run.stdout.split(" ", 1)
    assert imported.strip() == "[]"
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None:
        assert int(count) == torch.cuda.device_count()
