"""Hugging Face encoder checkpoint -> ONNX sentence-embedding model (pooled, normalised), with
graph optimisation, fp16 conversion, validation against torch and a manifest.

Names load lazily (PEP 562) so that ``import exporters`` does not import torch or onnxruntime:

- ``ExportConfig``, ``DEFAULT_OPSET``, ``resolve_layers`` (exporters.config); ``Pooling``, ``Dtype``
  (xretrieve.core.settings: the library's one vocabulary of settings)
- ``load_checkpoint``, ``PooledEncoder``, ``pool_hidden_states`` (exporters.wrapper; imports torch)
- ``export_checkpoint`` (exporters.onnx_export)
- ``optimize_graph``, ``quantize_int8``, ``convert_to_packed``, ``FusionError`` (exporters.optimize)
- ``choose_cpu_dtype``, ``DtypeChoice``, ``read_parallel_set`` (exporters.dtype_choice)
- ``validate_export``, ``ValidationReport``, ``ExportValidationError`` (exporters.validate)
- ``Manifest``, ``read_manifest``, ``MANIFEST_NAME``, ``FORMAT_VERSION`` (exporters.manifest)
- ``SUPPORTED_MODEL_TYPES``, ``read_checkpoint_config``, ``num_hidden_layers`` (exporters.checkpoint)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DEFAULT_OPSET": "exporters.config",
    "Dtype": "xretrieve.core.settings",
    "ExportConfig": "exporters.config",
    "Pooling": "xretrieve.core.settings",
    "resolve_layers": "exporters.config",
    "SUPPORTED_MODEL_TYPES": "exporters.checkpoint",
    "read_checkpoint_config": "exporters.checkpoint",
    "num_hidden_layers": "exporters.checkpoint",
    "PooledEncoder": "exporters.wrapper",
    "load_checkpoint": "exporters.wrapper",
    "pool_hidden_states": "exporters.wrapper",
    "export_checkpoint": "exporters.onnx_export",
    "FusionError": "exporters.optimize",
    "optimize_graph": "exporters.optimize",
    "quantize_int8": "exporters.optimize",
    "convert_to_packed": "exporters.optimize",
    "DtypeChoice": "exporters.dtype_choice",
    "choose_cpu_dtype": "exporters.dtype_choice",
    "read_parallel_set": "exporters.dtype_choice",
    "ExportValidationError": "exporters.validate",
    "ValidationReport": "exporters.validate",
    "validate_export": "exporters.validate",
    "FORMAT_VERSION": "exporters.manifest",
    "MANIFEST_NAME": "exporters.manifest",
    "Manifest": "exporters.manifest",
    "read_manifest": "exporters.manifest",
}

__all__ = [
    "DEFAULT_OPSET",
    "Dtype",
    "DtypeChoice",
    "ExportConfig",
    "ExportValidationError",
    "FORMAT_VERSION",
    "FusionError",
    "MANIFEST_NAME",
    "Manifest",
    "PooledEncoder",
    "Pooling",
    "SUPPORTED_MODEL_TYPES",
    "ValidationReport",
    "choose_cpu_dtype",
    "convert_to_packed",
    "export_checkpoint",
    "load_checkpoint",
    "num_hidden_layers",
    "optimize_graph",
    "pool_hidden_states",
    "read_checkpoint_config",
    "quantize_int8",
    "read_manifest",
    "read_parallel_set",
    "resolve_layers",
    "validate_export",
]

if TYPE_CHECKING:
    from exporters.checkpoint import (
        SUPPORTED_MODEL_TYPES,
        num_hidden_layers,
        read_checkpoint_config,
    )
    from exporters.config import DEFAULT_OPSET, ExportConfig, resolve_layers
    from exporters.dtype_choice import DtypeChoice, choose_cpu_dtype, read_parallel_set
    from exporters.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest, read_manifest
    from exporters.onnx_export import export_checkpoint
    from exporters.optimize import FusionError, convert_to_packed, optimize_graph, quantize_int8
    from exporters.validate import ExportValidationError, ValidationReport, validate_export
    from exporters.wrapper import PooledEncoder, load_checkpoint, pool_hidden_states
    from xretrieve.core.settings import Dtype, Pooling


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'exporters' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
