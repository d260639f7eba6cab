"""ONNX Runtime's transformer optimizer and the fp16 conversion, with a check that the fusions
that make the graph fast actually happened."""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

from exporters.config import Dtype
from xretrieve.errors import XRetrieveError

logger = logging.getLogger(__name__)

# Operators the optimizer fuses; counted in the final graph and written to the manifest.
FUSED_OPERATORS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)
# Architectures whose eager attention the optimizer (model_type="bert") is known to fuse: one
# Attention per transformer layer. Fewer means a change upstream (transformers' attention code,
# the optimizer's patterns) broke fusion, and the export would be several times slower.
FUSES_ATTENTION = ("xlm-roberta", "roberta", "bert", "distilbert")
# Protobuf cannot hold more than 2 GiB; larger graphs keep their weights in ``<name>.data``.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
# Name scope of the wrapper's pooling/normalisation nodes (``PooledEncoder.head``).
HEAD_SCOPE = "/head"


class FusionError(XRetrieveError):
    """The optimizer fused fewer attention blocks than the model has layers to run."""


def count_fused_operators(graph_nodes: list) -> dict[str, int]:
    """``{operator: count}`` over ``FUSED_OPERATORS`` in a list of ONNX ``NodeProto``."""
    counts = collections.Counter(node.op_type for node in graph_nodes)
    return {name: counts.get(name, 0) for name in FUSED_OPERATORS}


def _drop_duplicate_casts(graph) -> None:
    # The fp16 converter gives a tensor that feeds two kept-in-float32 nodes one Cast per
    # consumer, all of one name and one output name, which ONNX Runtime rejects: keep the first.
    seen: dict[tuple[str, ...], Any] = {}
    duplicates = []
    for node in graph.node:
        key = tuple(node.output)
        first = seen.setdefault(key, node)
        if first is node:
            continue
        if (first.op_type, list(first.input), list(first.attribute)) != (
            node.op_type,
            list(node.input),
            list(node.attribute),
        ):
            raise XRetrieveError(f"fp16 conversion produced two different nodes writing {key}")
        duplicates.append(node)
    for node in duplicates:
        graph.node.remove(node)


def optimize_graph(
    raw_path: Path,
    out_path: Path,
    *,
    model_type: str,
    num_heads: int,
    hidden_size: int,
    layers_run: int,
    dtype: Dtype,
    optimize: bool = True,
) -> dict[str, int]:
    """Optimise the float32 graph at ``raw_path`` and write the result to ``out_path`` (with
    ``out_path.name + ".data"`` beside it when over 2 GiB). Returns the fused-operator counts of
    the written graph.

    With ``optimize``, ONNX Runtime's transformer optimizer (model_type "bert", opt_level 0: its
    own fusions only, so the graph stays portable between execution providers; the session
    applies the provider-specific ones when it loads) fuses attention, SkipLayerNormalization and
    bias-GELU. ``FusionError`` when ``model_type`` is in ``FUSES_ATTENTION`` and fewer than
    ``layers_run`` attention blocks were fused. With ``Dtype.FP16`` the weights and compute
    become float16, but inputs/outputs and the pooling/normalisation head stay float32."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxruntime.transformers.optimizer import optimize_model

    if optimize:
        options = FusionOptions("bert")
        # Exact GELU: the tanh approximation would cost parity for no speed on GPUs.
        options.enable_gelu_approximation = False
        model = optimize_model(
            str(raw_path),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=options,
            opt_level=0,
        )
        fusion = count_fused_operators(list(model.model.graph.node))
        attention = fusion["Attention"] + fusion["MultiHeadAttention"]
        logger.info("fused operators: %s", fusion)
        if model_type in FUSES_ATTENTION and attention < layers_run:
            raise FusionError(
                f"the optimizer fused {attention} attention blocks for {layers_run} layers of a "
                f"{model_type!r} model (fused operators: {fusion}); the graph would run unfused "
                "and slow. A change in transformers' attention code can break fusion: export "
                "with eager attention, or pass optimize=False (--no-optimize) to accept it"
            )
    else:
        model = OnnxModel(onnx.load(str(raw_path)))
    if dtype is Dtype.FP16:
        head_nodes = [
            node.name for node in model.model.graph.node if node.name.startswith(HEAD_SCOPE)
        ]
        # Masked sums over hundreds of tokens and the L2 norm are where float16 loses most, and
        # they are cheap: keep them in float32.
        model.convert_float_to_float16(keep_io_types=True, node_block_list=head_nodes)
        _drop_duplicate_casts(model.model.graph)
    external = model.model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    model.save_model_to_file(str(out_path), use_external_data_format=external)
    written = onnx.load(str(out_path), load_external_data=False)
    return count_fused_operators(list(written.graph.node)) if optimize else {}
