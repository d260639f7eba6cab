"""Reduced-precision products and how far they can be off: the contract between the chunk
engine (``xretrieve.knn.chunk_search``) and the reductions that compute its chunk maxima
(``xretrieve.knn.chunk_maxima``)."""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class ProductPrecision(enum.Enum):
    """Arithmetic of the candidate products: inputs rounded to it, fp32 accumulation."""

    FP16 = "fp16"
    BF16 = "bf16"
    FP32 = "fp32"


# Unit roundoff and half the smallest subnormal step of each input format.
_ROUNDOFF = {
    ProductPrecision.FP16: 2.0**-11,
    ProductPrecision.BF16: 2.0**-8,
    ProductPrecision.FP32: 0.0,
}
_UNDERFLOW = {
    ProductPrecision.FP16: 2.0**-25,
    ProductPrecision.BF16: 2.0**-134,
    ProductPrecision.FP32: 0.0,
}
_FP32_ROUNDOFF = 2.0**-24


def product_error_bound(
    precision: ProductPrecision, dim: int, norm_a: float, norm_b: float
) -> float:
    """An upper bound on ``|p - a.b|`` for the computed product ``p`` of any rows ``a``, ``b``
    with ``|a| <= norm_a`` and ``|b| <= norm_b`` (L2), against exact arithmetic.

    Inputs rounded to ``precision`` (relative error ``u``, or an absolute ``eta`` in the
    subnormal range), fp32 accumulation over ``dim`` terms (``dim * 2^-24`` relative to
    ``sum |a_i b_i| <= |a| |b|``), and the output rounded to ``precision`` once more. The same
    accumulation term covers the fp32 re-scoring, so the bound also separates re-scored values.
    """
    u, eta = _ROUNDOFF[precision], _UNDERFLOW[precision]
    scale = norm_a * norm_b
    rounding = (2 * u + u * u + u) * (1 + 2 * u)
    accumulation = 2 * dim * _FP32_ROUNDOFF * (1 + u) ** 2
    underflow = eta * math.sqrt(dim) * (norm_a + norm_b) * (1 + u) + eta * eta * dim
    return 1.05 * (scale * (rounding + accumulation) + underflow)


def torch_dtype(precision: ProductPrecision) -> torch.dtype:
    import torch

    return {
        ProductPrecision.FP16: torch.float16,
        ProductPrecision.BF16: torch.bfloat16,
        ProductPrecision.FP32: torch.float32,
    }[precision]


def to_precision(block: torch.Tensor, precision: ProductPrecision) -> torch.Tensor:
    if precision is ProductPrecision.FP32:
        return block
    rounded = block.to(torch_dtype(precision))
    return rounded if block.device.type == "cuda" else rounded.float()
