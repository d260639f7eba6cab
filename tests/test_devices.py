"""The one GPU check: a missing package or provider means no GPU, never an exception."""

from __future__ import annotations

import builtins
import sys
import types

import pytest

from xretrieve import devices


def test_missing_packages_mean_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name in ("torch", "onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    assert devices.torch_cuda_available() is False
    assert devices.ort_cuda_available() is False


def test_ort_needs_the_provider_and_a_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    assert devices.ort_cuda_available() is False
    fake.get_available_providers = lambda: [devices.CUDA_PROVIDER, "CPUExecutionProvider"]
    monkeypatch.setattr(devices, "torch_cuda_available", lambda: True)
    assert devices.ort_cuda_available() is True
    monkeypatch.setattr(devices, "torch_cuda_available", lambda: False)
    monkeypatch.setattr(devices.Path, "exists", lambda self: False)
    assert devices.ort_cuda_available() is False
