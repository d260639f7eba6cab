"""Approximate FAISS indexes for mining past exact search: building sharded indexes from
memory-mapped embeddings (``build``), their manifest (``manifest``), searching all shards both
ways with a global top-k merge (``search``, ``topk``), optionally on Ray (``distributed``), and
mining corpora through them (``mining``)."""

from xretrieve.index.build import BuildConfig, build_index, default_factory
from xretrieve.index.manifest import IndexManifest, read_manifest
from xretrieve.index.search import SearchConfig, mine_indexes, open_index
from xretrieve.index.topk import merge_topk

__all__ = [
    "BuildConfig",
    "IndexManifest",
    "SearchConfig",
    "build_index",
    "default_factory",
    "merge_topk",
    "mine_indexes",
    "open_index",
    "read_manifest",
]
