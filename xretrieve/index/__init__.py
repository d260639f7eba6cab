"""Approximate FAISS indexes for mining past exact search: building sharded indexes from
memory-mapped embeddings (``build``), their manifest (``manifest``), searching all shards both
ways with a global top-k merge (``search``, ``topk``), optionally on Ray (``distributed``),
and checking an index in full (``verify``). Mining through indexes is
``xretrieve.mining.through_index``."""

from xretrieve.index.build import BuildConfig, build_index
from xretrieve.index.manifest import IndexManifest, read_index_manifest
from xretrieve.index.search import SearchConfig, open_index
from xretrieve.index.topk import merge_topk
from xretrieve.index.training import TrainingEstimate, TrainingPhase, default_factory
from xretrieve.index.verify import IndexCheck, verify_index

__all__ = [
    "BuildConfig",
    "IndexCheck",
    "IndexManifest",
    "SearchConfig",
    "TrainingEstimate",
    "TrainingPhase",
    "build_index",
    "default_factory",
    "merge_topk",
    "open_index",
    "read_index_manifest",
    "verify_index",
]
