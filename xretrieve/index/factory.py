"""FAISS index types: the import with its install hint, an empty index from an ``index_factory``
string (FAISS's refusals turned into one clear line), and what an index file actually is (its
structure, compared with the factory a manifest records)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from xretrieve.core.errors import XRetrieveError

# "Error in <function> at <file>:<line>: " before the reason of a FAISS exception.
_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: ")
_FAISS_ASSERTION = re.compile(r"^Error: '(?P<condition>.*)' failed(?:: (?P<reason>.*))?$")


def faiss_module():
    """The ``faiss`` module, or ``XRetrieveError`` with the install command."""
    try:
        import faiss
    except ImportError:
        raise XRetrieveError("approximate indexes need FAISS: pip install faiss-cpu") from None
    return faiss


def faiss_reason(error: Exception) -> str:
    """FAISS's exception text as a reason a user can read: the C++ location and the bare
    assertion dropped, the explanation FAISS gives kept."""
    lines = str(error).strip().splitlines()
    text = _FAISS_LOCATION.sub("", lines[-1].strip()) if lines else ""
    assertion = _FAISS_ASSERTION.match(text)
    if assertion is None:
        return text
    if assertion["reason"]:
        return assertion["reason"]
    if "METRIC_L2" in assertion["condition"]:
        return (
            "FAISS has this index for the L2 metric only, and mining needs inner product "
            "(cosine); choose another factory"
        )
    return f"FAISS's check {assertion['condition']} failed"


def new_index(factory: str, dim: int):
    """An empty inner-product FAISS index from ``factory``; ``XRetrieveError`` in one line when
    FAISS rejects the string (unparsable, PQ64 on a dimension 64 does not divide, an index
    without an inner-product version such as LSH)."""
    faiss = faiss_module()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        reason = faiss_reason(error)
        if reason.startswith("could not parse index string"):
            reason = (
                "not a FAISS index_factory string (e.g. Flat, IVF1024,Flat, OPQ64,IVF1024,PQ64)"
            )
        raise XRetrieveError(
            f"FAISS cannot build index {factory!r} for dimension {dim}: {reason}"
        ) from None


def inverted_lists(index) -> int:
    """The inverted lists of ``index`` (0 for an index without)."""
    ivf = faiss_module().try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 0


def structure(index) -> tuple[Any, ...]:
    """What ``index`` is, as nested tuples: its FAISS class, dimension and metric, its
    transforms, inverted lists and quantizer, code size and PQ shape, and the same of the
    indexes it wraps. Compare only indexes as read from files (FAISS writes some types as
    others: see ``factory_structure``)."""
    faiss = faiss_module()
    typed = faiss.downcast_index(index)  # ``index`` stays referenced: it owns ``typed``
    parts: list[Any] = [type(typed).__name__, int(typed.d), int(typed.metric_type)]
    if isinstance(typed, faiss.IndexPreTransform):
        for i in range(typed.chain.size()):
            transform = faiss.downcast_VectorTransform(typed.chain.at(i))
            parts.append(
                ("transform", type(transform).__name__, int(transform.d_in), int(transform.d_out))
            )
        parts.append(("index", structure(typed.index)))
    if isinstance(typed, faiss.IndexIVF):
        parts += [("lists", int(typed.nlist)), ("quantizer", structure(typed.quantizer))]
    if hasattr(typed, "code_size"):
        parts.append(("code_size", int(typed.code_size)))
    pq = getattr(typed, "pq", None)
    if pq is not None:
        parts.append(("pq", int(pq.M), int(pq.nbits)))
    for inner in ("base_index", "refine_index", "storage"):
        if getattr(typed, inner, None) is not None:
            parts.append((inner, structure(getattr(typed, inner))))
    return tuple(parts)


def factory_structure(factory: str, dim: int) -> tuple[Any, ...]:
    """``structure`` of an empty ``factory`` index written and read back, as a file built with
    it reads (FAISS writes an ``IndexFlat`` of inner product as ``IndexFlatIP``, say)."""
    faiss = faiss_module()
    with tempfile.TemporaryDirectory(prefix="xretrieve-factory-") as tmp:
        path = Path(tmp) / "empty.faiss"
        faiss.write_index(new_index(factory, dim), str(path))
        return structure(faiss.read_index(str(path)))


def describe(index) -> str:
    """A short name of ``index`` for messages: its class, dimension and metric."""
    faiss = faiss_module()
    typed = faiss.downcast_index(index)
    metric = {0: "inner product", 1: "L2"}.get(
        int(typed.metric_type), f"metric {typed.metric_type}"
    )
    return f"{type(typed).__name__} (dimension {typed.d}, {metric})"
