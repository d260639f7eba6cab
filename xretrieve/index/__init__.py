"""Approximate FAISS indexes for mining past exact search: building sharded indexes from
memory-mapped embeddings (``build``), their manifest (``manifest``), searching all shards both
ways with a global top-k merge (``search``, ``topk``), optionally on Ray (``distributed``),
mining corpora through them (``mining``), and checking an index in full (``verify``)."""

from xretrieve.index.build import BuildConfig, build_index, default_factory
from xretrieve.index.manifest import IndexManifest, read_manifest
from xretrieve.index.search import SearchConfig, mine_indexes, open_index
from xretrieve.index.topk import merge_topk
from xretrieve.index.verify import IndexCheck, verify_index

__all__ = [
    "BuildConfig",
    "IndexCheck",
    "IndexManifest",
    "SearchConfig",
    "build_index",
    "default_factory",
    "merge_topk",
    "mine_indexes",
    "open_index",
    "read_manifest",
    "verify_index",
]
