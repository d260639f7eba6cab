"""Mining two corpora through their indexes: the approximate counterpart of
``xretrieve.mining.corpus.mine_corpora`` (distinct texts, same ``CorpusMining`` result)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.core.progress import ProgressCallback
from xretrieve.formats import Corpus, distinct_texts
from xretrieve.index.manifest import MANIFEST
from xretrieve.index.search import OpenIndex, SearchConfig, mine_indexes, open_index
from xretrieve.mining.corpus import CorpusMining
from xretrieve.mining.margin import MiningConfig


@dataclass(frozen=True)
class IndexMining:
    """Where the two indexes are, how to search them, and ``ray``: None for one process, else
    ``local``, ``auto`` or a cluster address."""

    src_dir: Path
    tgt_dir: Path
    search: SearchConfig = SearchConfig()
    ray: str | None = None


@dataclass(frozen=True)
class IndexCorpusMining(CorpusMining):
    """``CorpusMining`` through indexes, with the inverted lists visited per query in the
    source and the target index (``src_nprobe``, ``tgt_nprobe``; None for an index without
    lists): the values ``--nprobe`` (or its default) gave."""

    src_nprobe: int | None = None
    tgt_nprobe: int | None = None


def _check_rows(index: OpenIndex, corpus: Corpus) -> None:
    if index.manifest.count != len(corpus):
        raise InputError(
            index.directory / MANIFEST,
            f"the index has {index.manifest.count} rows but {corpus.path} has {len(corpus)} "
            "lines; they must match",
        )


def mine_corpora_with_indexes(
    src: Corpus,
    tgt: Corpus,
    indexes: IndexMining,
    config: MiningConfig,
    *,
    progress: ProgressCallback | None = None,
) -> IndexCorpusMining:
    """Mine the distinct texts of ``src`` and ``tgt`` through the indexes built from their
    embeddings (one row per corpus line, as ``index build`` was given them)."""
    src_index, tgt_index = open_index(indexes.src_dir), open_index(indexes.tgt_dir)
    _check_rows(src_index, src)
    _check_rows(tgt_index, tgt)
    src_rows, src_inverse = distinct_texts(src.texts)
    tgt_rows, tgt_inverse = distinct_texts(tgt.texts)
    search = None
    if indexes.ray is not None:
        from xretrieve.index.distributed import RaySearch

        search = RaySearch(indexes.ray)
    try:
        pairs = mine_indexes(
            src_index,
            tgt_index,
            config,
            indexes.search,
            src_rows=src_rows,
            tgt_rows=tgt_rows,
            search=search,
            progress=progress,
        )
    finally:
        if search is not None:
            search.close()
    return IndexCorpusMining(
        src_rows, src_inverse, tgt_rows, tgt_inverse, pairs,
        src_nprobe=src_index.nprobe(indexes.search.nprobe),
        tgt_nprobe=tgt_index.nprobe(indexes.search.nprobe),
    )  # fmt: skip
