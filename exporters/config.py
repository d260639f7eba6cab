"""What an export computes and how it is stored: plain values, no heavy imports. ``Pooling``
and ``Dtype`` are the library's (``xretrieve.core.settings``), re-exported here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.settings import Device, Dtype, Pooling, parse_device, parse_dtype, parse_pooling

# ONNX opset of exported graphs: 17 has LayerNormalization as one operator and is what ONNX
# Runtime's transformer optimizer fuses (Attention, SkipLayerNormalization, BiasGelu).
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``export_checkpoint``.

    ``layers``: hidden-state indices (0 = embeddings' output, -1 = last layer); the first is the
    ``embeddings`` output, all of them (in order) form ``layer_embeddings`` when there are several.
    ``pooling``: how token vectors become one (``Pooling``); None takes the checkpoint's own: the
    pipeline of a sentence-transformers folder, else MEAN.
    ``normalize``: L2-normalise the output (a sentence-transformers pipeline that ends in
    Normalize cannot be exported without it).
    ``max_length``: tokens per text the export is meant for; None takes it from the tokenizer
    (``model_max_length``; a sentence-transformers folder's ``max_seq_length``) capped by the
    model's position embeddings.
    ``text_prefix``: prepended to every text before tokenising (e.g. "query: " for E5); None
    takes the checkpoint's own (``model_settings.read_model_settings``: its ``xretrieve.json``,
    the default model's "query: ", a sentence-transformers folder's prompt).
    ``mining_threshold``: a calibrated margin threshold {margin, k, threshold, ...} stored in the
    manifest; None takes the checkpoint's own when the prefix is the checkpoint's own.
    ``projection``: attach the checkpoint's trained image-text projection head
    (``projection.safetensors`` + ``projection.json``, written by ``xretrieve train``) after
    pooling, so that text embeddings land in the image-feature space."""

    layers: tuple[int, ...] = (-1,)
    pooling: Pooling | None = None
    normalize: bool = True
    dtype: Dtype = Dtype.FP16
    opset: int = DEFAULT_OPSET
    optimize: bool = True
    text_prefix: str | None = None
    max_length: int | None = None
    projection: bool = False
    mining_threshold: Mapping[str, Any] | None = None
    # int8 only: one weight scale per output column of each MatMul instead of one per matrix.
    # Per tensor loses too much on multilingual-e5-small (validation mean cosine 0.985 to torch
    # fp32, below the 0.99 bar; per channel 0.995) and is no faster on the CPU
    # (benchmarks/RESULTS.md).
    int8_per_channel: bool = True
    # Packed mode for the CUDA execution provider: RemovePadding before the first layer,
    # PackedAttention instead of Attention, RestorePadding after the last layer, so that no
    # compute is spent on padding tokens. ONNX Runtime has these operators on CUDA only.
    packed: bool = False
    # Where the graph will run, for dtype AUTO: CPU settles AUTO between int8 and fp32 by the
    # held-out check even where a GPU is usable (an encoder asked to run on the CPU); AUTO and
    # CUDA take fp16 where ONNX Runtime can use a GPU here.
    device: Device = Device.AUTO

    def __post_init__(self) -> None:
        # Accept plain strings/lists from callers but store the typed values.
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        if self.pooling is not None:
            object.__setattr__(self, "pooling", parse_pooling(self.pooling))
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        object.__setattr__(self, "device", parse_device(self.device))
        if not self.layers:
            raise XRetrieveError("at least one layer is needed")
        if not 14 <= self.opset <= 23:
            raise XRetrieveError(f"opset {self.opset} is not supported (14..23)")
        if self.max_length is not None and self.max_length < 2:
            raise XRetrieveError(f"max_length must be at least 2, not {self.max_length}")
        if self.packed and (self.dtype is not Dtype.FP16 or not self.optimize):
            raise XRetrieveError(
                "a packed export is for the CUDA execution provider: it needs dtype fp16 and "
                "the optimizer's fused Attention"
            )
        if self.packed and len(self.layers) != 1:
            # Intermediate layers' hidden states stay packed ([tokens, dim]) in a packed graph.
            raise XRetrieveError("a packed export pools one layer only")


def resolve_layers(layers: tuple[int, ...] | list[int], num_hidden_layers: int) -> tuple[int, ...]:
    """Hidden-state indices as non-negative ints: 0 is the embeddings' output, ``L`` (=
    ``num_hidden_layers``) the last layer's; negative values count from the end (-1 = ``L``).
    Order is kept; an empty list, duplicates and out-of-range values raise ``XRetrieveError``."""
    if not layers:
        raise XRetrieveError("at least one layer is needed")
    resolved = []
    for layer in layers:
        index = layer + num_hidden_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_hidden_layers:
            raise XRetrieveError(
                f"layer {layer} is out of range for a model with {num_hidden_layers} layers "
                f"(valid: 0..{num_hidden_layers}, or -{num_hidden_layers + 1}..-1 from the end)"
            )
        resolved.append(index)
    if len(set(resolved)) != len(resolved):
        raise XRetrieveError(f"layers {tuple(layers)} name the same layer twice")
    return tuple(resolved)
