"""ONNX Runtime's transformer optimizer, the fp16 conversion, int8 quantisation and the
packed-mode conversion, with a check that the fusions that make the graph fast actually happened."""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.settings import Dtype

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
    "MatMulInteger",  # int8: one per quantised MatMul
    "QAttention",  # int8: Attention with an int8 QKV projection
    "PackedAttention",  # packed mode (CUDA): Attention without padding tokens
    "RemovePadding",
    "RestorePadding",
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
                "with eager attention, or pass {optimize=False} to accept it",
                arguments=("optimize",),
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


@contextlib.contextmanager
def _without_preprocess_hint() -> Iterator[None]:
    """Drop the quantizer's advice to run its pre-processing (logged on the root logger, so it
    would reach stderr through logging's last-resort handler): the graph given to it is already
    optimised and shape-inferred by the transformer optimizer."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    *,
    per_channel: bool = True,
    attention: bool = True,
    calibration: Iterable[Mapping[str, Any]] | None = None,
    batch_independent: bool = True,
) -> dict[str, int]:
    """int8 quantisation of the float32 graph at ``fp32_path`` into ``out_path``: every MatMul
    with a constant weight gets int8 weights (symmetric, one scale per output column with
    ``per_channel``, else one per matrix) and uint8 activations (MatMulInteger), and (with
    ``attention``) each fused Attention becomes QAttention, whose QKV projection runs the same
    way (7-bit weights, ONNX Runtime's choice for it; the scores and softmax stay float32). The
    embeddings, layer norms and the pooling head stay float32; inputs and outputs keep their
    types.

    Activation scales (``exporters.int8_activations``): one per token before MatMulInteger, and
    before QAttention (which takes one scale) a fixed one calibrated on ``calibration`` (int64
    ``input_ids``/``attention_mask`` feeds; needed with ``attention``), so that an embedding does
    not depend on the batch it ran in. ``batch_independent=False`` keeps ONNX Runtime's dynamic
    quantisation as it is (one scale per batch, computed at run time), for benchmarks only.
    Returns the fused-operator counts of the written graph; ``XRetrieveError`` when nothing was
    quantised."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from exporters.int8_activations import fix_activation_scales

    external = Path(fp32_path).stat().st_size > EXTERNAL_DATA_THRESHOLD
    with _without_preprocess_hint():
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            # Quantising Attention too (QAttention) measured 1.5x faster than MatMul alone on
            # 2 CPU cores at the same validation cosine (benchmarks/RESULTS.md, issue 12).
            op_types_to_quantize=["MatMul", "Attention"] if attention else ["MatMul"],
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            use_external_data_format=external,
            extra_options={
                # Contrib operators (Attention, SkipLayerNormalization) defeat ONNX shape inference;
                # the tensors it cannot type are float32 in these graphs.
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                # Weights only: activation x activation products (unfused attention) stay float32.
                "MatMulConstBOnly": True,
            },
        )
    scales = (
        fix_activation_scales(Path(out_path), calibration, external=external)
        if batch_independent
        else {}
    )
    written = onnx.load(str(out_path), load_external_data=False)
    counts = count_fused_operators(list(written.graph.node))
    if counts["MatMulInteger"] + counts["QAttention"] == 0:
        raise XRetrieveError(f"int8 quantisation of {fp32_path.name} quantised no MatMul")
    logger.info(
        "int8 (%s, activation scales %s): %s",
        "per channel" if per_channel else "per tensor",
        scales or "per batch",
        counts,
    )
    return counts


def convert_to_packed(path: Path, layers_run: int) -> dict[str, int]:
    """Rewrite the fused fp16 graph at ``path`` in place into ONNX Runtime's packed mode
    (``onnxruntime.transformers.convert_to_packing_mode``): RemovePadding gathers the real
    tokens after the embeddings, each Attention becomes PackedAttention over
    ``[tokens, hidden]`` with cumulative sequence lengths, and RestorePadding scatters the last
    layer's output back to ``[batch, seq, hidden]`` before the pooling head. The operators exist
    for the CUDA execution provider only. ``FusionError`` unless every one of ``layers_run``
    Attention nodes was converted."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        from onnxruntime.transformers.convert_to_packing_mode import PackingMode
    except ImportError as error:
        raise XRetrieveError(
            f"this onnxruntime has no packing-mode conversion ({error}); export without packed"
        ) from None
    external = path.stat().st_size > EXTERNAL_DATA_THRESHOLD
    model = OnnxModel(onnx.load(str(path)))
    PackingMode(model).convert(use_symbolic_shape_infer=True)
    counts = count_fused_operators(list(model.model.graph.node))
    if counts["PackedAttention"] < layers_run or counts["RemovePadding"] != 1:
        raise FusionError(
            f"packed-mode conversion made {counts['PackedAttention']} PackedAttention nodes for "
            f"{layers_run} layers (fused operators: {counts}); export without packed"
        )
    model.save_model_to_file(str(path), use_external_data_format=external)
    return counts
