"""What ``xretrieve mine`` runs: ``mine_bitext(MineRequest(...)) -> MiningReport`` reads the
inputs (files, a BUCC directory, or the bundled sample), embeds them or reads their embeddings
(or searches their approximate indexes, ``MineRequest.indexes``), takes, tunes or defaults the
threshold (``xretrieve.mining.api``), mines over distinct texts, scores against gold and writes
the pairs TSV (LASER's layout)."""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xretrieve.core.errors import ArgumentError, XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.settings import ThresholdSource
from xretrieve.formats import Corpus
from xretrieve.mining.api import ThresholdChoice, _given_or_default, model_threshold
from xretrieve.mining.corpus import CorpusMining
from xretrieve.mining.margin import DEFAULT_CONFIG, MinedPairs, MiningConfig
from xretrieve.mining.sources import EmbeddingSource

if TYPE_CHECKING:
    from xretrieve.index.search import SearchConfig
    from xretrieve.mining.through_index import IndexMining


# The language pairs of the bundled sample (xretrieve/sample_data/bucc2018).
BUNDLED_PAIRS = (("de", "en"),)


SAMPLE_SPLIT = "sample"


def sample_data_dir() -> Path:
    """The bundled sample data directory (``xretrieve/sample_data``)."""
    return Path(str(importlib.resources.files("xretrieve") / "sample_data"))


@dataclass(frozen=True)
class MineRequest:
    """The inputs of ``mine_bitext``, as the ``mine`` command's flags give them.

    Texts: ``src_file``/``tgt_file`` (plain text or BUCC TSV), or ``data_dir`` + ``split``
    (BUCC layout), or neither: the bundled ``src_lang``-``tgt_lang`` sample. Embeddings:
    ``model`` (None = the default model, with ``text_prefix`` overriding its prefix, or
    ``prompt`` naming one of its prompts), or
    ``src_emb``/``tgt_emb`` files, or ``emb_dir`` mirroring ``data_dir``; or, instead of
    embeddings, ``indexes`` (``xretrieve index build`` directories of the two sides, one row
    per line, searched approximately; no model, tuning split or prefix then). Threshold:
    ``threshold``, or the one ``tune_split`` (of ``data_dir``) tunes, or the default."""

    src_lang: str = "de"
    tgt_lang: str = "en"
    src_file: Path | None = None
    tgt_file: Path | None = None
    data_dir: Path | None = None
    split: str = "test"
    gold_file: Path | None = None
    model: str | None = None
    text_prefix: str | None = None
    prompt: str | None = None
    src_emb: Path | None = None
    tgt_emb: Path | None = None
    emb_dir: Path | None = None
    config: MiningConfig = DEFAULT_CONFIG
    threshold: float | None = None
    tune_split: str | None = None
    out: Path | None = None
    indexes: IndexMining | None = None


@dataclass(frozen=True)
class MiningReport:
    """What ``mine_bitext`` did. ``candidates``: pairs the mode selected (distinct texts, before
    the threshold); ``pairs``: those with ``score >= threshold``; ``rows``: the output rows
    ``(score, [src_id], [tgt_id], src_text, tgt_text)`` of those pairs, one per id combination
    of a text that occurs under several ids. Gold figures (percent) are None without gold."""

    input: str
    src_sentences: int
    tgt_sentences: int
    src_distinct: int
    tgt_distinct: int
    config: MiningConfig
    threshold: float | None
    threshold_source: ThresholdSource
    candidates: int
    pairs: int
    rows: tuple[tuple[str, ...], ...]
    tune_split: str | None = None
    tune_f1: float | None = None
    gold: int | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    out: Path | None = None
    index_search: SearchConfig | None = None
    # Inverted lists visited per query in the source and the target index (None: no lists).
    index_nprobe: tuple[int | None, int | None] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``xretrieve mine --json`` prints (tuning and gold keys only when
        they apply)."""
        summary: dict[str, Any] = {"input": self.input}
        if self.tune_split is not None:
            summary |= {"tune_split": self.tune_split, "tune_f1": self.tune_f1}
        summary |= {
            "src_sentences": self.src_sentences,
            "tgt_sentences": self.tgt_sentences,
            "src_distinct": self.src_distinct,
            "tgt_distinct": self.tgt_distinct,
            "k": self.config.k,
            "margin": self.config.margin.value,
            "mode": self.config.mode.value,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source.value,
            "candidates": self.candidates,
            "pairs": self.pairs,
            "rows": len(self.rows),
        }
        if self.index_search is not None:
            search = self.index_search
            src_nprobe, tgt_nprobe = self.index_nprobe or (search.nprobe, search.nprobe)
            summary |= {
                # The value used (one, or per index when their lists differ); None: no lists.
                "nprobe": src_nprobe
                if src_nprobe == tgt_nprobe
                else {"src_index": src_nprobe, "tgt_index": tgt_nprobe},
                "rescore": search.rescore,
                "candidate_factor": search.candidate_factor if search.rescore else 1,
            }
        if self.gold is not None:
            summary |= {
                "gold": self.gold,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
            }
        if self.out is not None:
            summary["out"] = str(self.out)
        return summary


@dataclass(frozen=True)
class MiningInputs:
    """The texts to mine, their gold (id pairs) if any, the data directory they came from (for
    ``--emb-dir`` and ``--tune-split``) and a label for reports."""

    src: Corpus
    tgt: Corpus
    gold: frozenset[tuple[str, str]] | None
    data_dir: Path | None
    label: str


def read_inputs(request: MineRequest) -> MiningInputs:
    """The texts of ``request`` (see ``MineRequest``); ``ArgumentError`` for fields that do not
    fit together, ``InputError`` for bad files."""
    from xretrieve.formats import read_bucc_gold, read_bucc_split, read_corpus

    src_file, tgt_file, data_dir = request.src_file, request.tgt_file, request.data_dir
    if src_file is not None or tgt_file is not None:
        if src_file is None or tgt_file is None:
            raise ArgumentError.from_template("give both {src_file} and {tgt_file}")
        if data_dir is not None:
            raise ArgumentError.from_template(
                "give either {src_file}/{tgt_file} or {data_dir}, not both"
            )
        src, tgt = read_corpus(src_file), read_corpus(tgt_file)
        gold = read_bucc_gold(request.gold_file, src, tgt) if request.gold_file else None
        return MiningInputs(src, tgt, gold, None, f"{src_file.name} - {tgt_file.name}")
    if data_dir is None:
        _check_bundled(request)
    if request.tgt_lang != "en":
        raise ArgumentError.from_template(
            "the BUCC layout pairs a language with English: use {tgt_lang='en'}"
        )
    root = data_dir if data_dir is not None else sample_data_dir()
    split = request.split if data_dir is not None else SAMPLE_SPLIT
    bucc = read_bucc_split(root, request.src_lang, split)
    gold = read_bucc_gold(request.gold_file, bucc.src, bucc.tgt) if request.gold_file else bucc.gold
    return MiningInputs(bucc.src, bucc.tgt, gold, root, f"{request.src_lang}-en {split}")


def _check_bundled(request: MineRequest) -> None:
    """Without ``src_file``/``tgt_file`` and ``data_dir`` the bundled sample is mined: it must
    exist for the pair, and precomputed embeddings cannot be of it."""
    if request.src_emb is not None or request.tgt_emb is not None:
        raise ArgumentError.from_template(
            "{src_emb}/{tgt_emb} need the texts they embed: give {src_file}/{tgt_file} "
            "(or {data_dir} DIR {split} S)"
        )
    if (request.src_lang, request.tgt_lang) not in BUNDLED_PAIRS:
        bundled = ", ".join(f"{src}-{tgt}" for src, tgt in BUNDLED_PAIRS)
        raise XRetrieveError(
            f"no bundled sample for {request.src_lang}-{request.tgt_lang} (only {bundled} is "
            "bundled): give your sentences with {src_file} SRC.txt {tgt_file} TGT.txt, or a "
            "BUCC-layout directory with {data_dir} DIR {split} S",
            arguments=("src_file", "tgt_file", "data_dir", "split"),
        )


def mine_bitext(request: MineRequest, progress: ProgressCallback | None = None) -> MiningReport:
    """Run ``xretrieve mine``: see the module doc and ``MineRequest``. Writes ``request.out``
    (TSV, atomically) when given."""
    from xretrieve.core.outputs import check_output_path
    from xretrieve.mining.corpus import mine_corpora

    _check_request(request)
    if request.out is not None:
        # Before any reading or embedding; an output that is an input would be emptied.
        check_output_path(request.out, inputs=request_inputs(request))
    if request.indexes is not None and request.indexes.work_dir is not None:
        from xretrieve.mining.streaming import STREAM_OUTPUT

        check_output_path(
            request.indexes.work_dir, directory=True, option="work_dir",
            inputs=request_inputs(request), owner=STREAM_OUTPUT,
        )  # fmt: skip
    inputs = read_inputs(request)
    config = request.config
    tune_f1 = None
    index_nprobe = None
    if request.indexes is not None:
        from xretrieve.mining.through_index import mine_corpora_with_indexes

        choice = _given_or_default(request.threshold, config, None)
        mining = mine_corpora_with_indexes(
            inputs.src, inputs.tgt, request.indexes, config, progress=progress
        )
        index_nprobe = (mining.src_nprobe, mining.tgt_nprobe)
    else:
        src_matrix, tgt_matrix, source = _embed_inputs(inputs, request, progress)
        if request.tune_split is not None:
            threshold, tune_f1 = _tune(inputs, request, source, progress)
            choice = ThresholdChoice(threshold, ThresholdSource.TUNED)
        else:
            choice = _given_or_default(request.threshold, config, model_threshold(source))
        mining = mine_corpora(
            inputs.src, inputs.tgt, src_matrix, tgt_matrix, config, progress=progress
        )
    selected = mining.pairs.above(choice.threshold)
    rows = pair_rows(inputs, mining, selected)
    gold = _gold_scores(inputs, mining, choice.threshold)
    if request.out is not None:
        write_pairs_tsv(request.out, rows)
    return MiningReport(
        input=inputs.label,
        src_sentences=len(inputs.src),
        tgt_sentences=len(inputs.tgt),
        src_distinct=int(mining.src_rows.size),
        tgt_distinct=int(mining.tgt_rows.size),
        config=config,
        threshold=choice.threshold,
        threshold_source=choice.source,
        candidates=len(mining.pairs),
        pairs=len(selected),
        rows=tuple(tuple(row) for row in rows),
        tune_split=request.tune_split,
        tune_f1=tune_f1,
        out=request.out,
        index_search=None if request.indexes is None else request.indexes.search,
        index_nprobe=index_nprobe,
        **gold,
    )


def request_inputs(request: MineRequest) -> list[Path]:
    """Every file or directory ``request`` reads (sentence, gold and embedding files, the BUCC
    files of the mined and tuning splits and their mirrors under ``emb_dir``, the indexes, a
    model directory), for the output guard: ``out`` may be none of them."""
    from xretrieve.formats.bucc import bucc_paths
    from xretrieve.formats.embeddings import embedding_path

    given = (request.src_file, request.tgt_file, request.gold_file, request.src_emb)
    paths = [Path(path) for path in (*given, request.tgt_emb) if path is not None]
    root = request.data_dir
    if root is None and request.src_file is None and request.tgt_file is None:
        root = sample_data_dir()
    if root is not None:
        splits = dict.fromkeys(
            [request.split if request.data_dir is not None else SAMPLE_SPLIT, request.tune_split]
        )
        for split in (split for split in splits if split is not None):
            src_path, tgt_path, gold_path = bucc_paths(root, request.src_lang, split)
            paths += [src_path, tgt_path, gold_path]
            if request.emb_dir is not None:
                paths += [embedding_path(request.emb_dir, root, p) for p in (src_path, tgt_path)]
    elif request.emb_dir is not None:
        paths.append(Path(request.emb_dir))
    if request.indexes is not None:
        paths += [Path(request.indexes.src_dir), Path(request.indexes.tgt_dir)]
    if request.model is not None and Path(request.model).exists():
        paths.append(Path(request.model))
    return paths


def _check_request(request: MineRequest) -> None:
    if request.indexes is not None and (
        request.src_emb is not None
        or request.tgt_emb is not None
        or request.model is not None
        or request.emb_dir is not None
        or request.tune_split is not None
        or request.text_prefix is not None
        or request.prompt is not None
    ):
        raise ArgumentError.from_template(
            "{indexes} replace {src_emb}/{tgt_emb}, {model}, {text_prefix}, {prompt}, "
            "{emb_dir} and {tune_split}: give only the indexes (and {threshold})"
        )
    indexes = request.indexes
    if indexes is not None and indexes.work_dir is not None and indexes.stream == "off":
        raise ArgumentError.from_template(
            "{work_dir} is where streamed mining works: give it without {stream}='off'"
        )
    if request.threshold is not None and request.tune_split is not None:
        raise ArgumentError.from_template("give either {threshold} or {tune_split}, not both")
    if request.tune_split is not None and request.data_dir is None:
        raise ArgumentError.from_template("{tune_split} reads DIR's gold: give {data_dir}")
    if request.tune_split is not None and request.src_emb is not None and request.emb_dir is None:
        raise ArgumentError.from_template(
            "{tune_split} needs embeddings of the tuning split: give {emb_dir}"
        )
    if (
        (request.text_prefix is not None or request.prompt is not None)
        and request.model is None
        and (request.src_emb is not None or request.emb_dir is not None)
    ):
        raise ArgumentError.from_template(
            "{text_prefix} and {prompt} apply to {model}, not to precomputed embeddings"
        )


def _embed_inputs(
    inputs: MiningInputs, request: MineRequest, progress: ProgressCallback | None
) -> tuple[np.ndarray, np.ndarray, EmbeddingSource | None]:
    """Source and target embeddings, and the source they came from (None for ``src_emb`` and
    ``tgt_emb``), so that a tuning split is embedded by the same, already loaded, encoder."""
    from xretrieve.formats import read_embeddings
    from xretrieve.mining.sources import embed_pair, embedding_source

    if request.src_emb is not None or request.tgt_emb is not None:
        if request.src_emb is None or request.tgt_emb is None:
            raise ArgumentError.from_template("give both {src_emb} and {tgt_emb}")
        if request.model is not None:
            raise ArgumentError.from_template(
                "give either {model} or {src_emb}/{tgt_emb}, not both"
            )
        src_matrix = read_embeddings(request.src_emb, rows=len(inputs.src))
        tgt_matrix = read_embeddings(request.tgt_emb, rows=len(inputs.tgt), dim=src_matrix.shape[1])
        return src_matrix, tgt_matrix, None
    source = embedding_source(
        request.model,
        request.emb_dir,
        inputs.data_dir,
        text_prefix=request.text_prefix,
        prompt=request.prompt,
        progress=progress,
    )
    return (*embed_pair(source, inputs.src, inputs.tgt, progress), source)


def _tune(
    inputs: MiningInputs,
    request: MineRequest,
    source: EmbeddingSource | None,
    progress: ProgressCallback | None,
) -> tuple[float, float]:
    """``(threshold, tune_f1)`` chosen on the tuning split's gold."""
    from xretrieve.formats import read_bucc_split
    from xretrieve.mining.gold import tune_threshold
    from xretrieve.mining.sources import embed_pair, embedding_source

    tune = read_bucc_split(request.data_dir, request.src_lang, request.tune_split)
    if source is None:
        source = embedding_source(
            request.model,
            request.emb_dir,
            request.data_dir,
            text_prefix=request.text_prefix,
            prompt=request.prompt,
            progress=progress,
        )
    tune_src, tune_tgt = embed_pair(source, tune.src, tune.tgt, progress)
    return tune_threshold(tune, tune_src, tune_tgt, request.config, progress=progress)


def _gold_scores(
    inputs: MiningInputs, mining: CorpusMining, threshold: float | None
) -> dict[str, Any]:
    """``gold``, ``precision``, ``recall``, ``f1`` (percent, BUCC's id-level scoring) or {}."""
    from xretrieve.mining.corpus import id_candidates
    from xretrieve.mining.gold import gold_mask, precision_recall_f1

    if inputs.gold is None:
        return {}
    candidates = id_candidates(mining, inputs.src, inputs.tgt)
    correct = gold_mask(candidates, inputs.gold, inputs.src, inputs.tgt)
    n_gold = len(inputs.gold)
    precision, recall, f1, _ = precision_recall_f1(candidates.score, correct, n_gold, threshold)
    return {"gold": len(inputs.gold), "precision": precision, "recall": recall, "f1": f1}


def _rows_of_distinct(inverse: np.ndarray) -> list[np.ndarray]:
    """For each distinct text, the corpus rows holding it."""
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def pair_rows(inputs: MiningInputs, mining: CorpusMining, pairs: MinedPairs) -> list[list[str]]:
    """Output rows (score, [src_id], [tgt_id], src_text, tgt_text) of ``pairs`` (some of
    ``mining.pairs``: distinct texts)."""
    src_groups = _rows_of_distinct(mining.src_inverse)
    tgt_groups = _rows_of_distinct(mining.tgt_inverse)
    rows: list[list[str]] = []
    for src_index, tgt_index, pair_score in zip(
        pairs.src_index.tolist(), pairs.tgt_index.tolist(), pairs.score.tolist(), strict=True
    ):
        score = f"{pair_score:.9g}"
        src_rows = src_groups[src_index].tolist()
        tgt_rows = tgt_groups[tgt_index].tolist()
        src_text = inputs.src.texts[src_rows[0]]
        tgt_text = inputs.tgt.texts[tgt_rows[0]]
        src_ids = [inputs.src.ids[r] for r in src_rows] if inputs.src.ids else [None]
        tgt_ids = [inputs.tgt.ids[r] for r in tgt_rows] if inputs.tgt.ids else [None]
        for src_id in src_ids:
            for tgt_id in tgt_ids:
                ids = [i for i in (src_id, tgt_id) if i is not None]
                rows.append([score, *ids, src_text, tgt_text])
    return rows


def write_pairs_tsv(path: Path, rows: Sequence[Sequence[str]]) -> None:
    """``rows`` tab-separated, one per line, no header (LASER's layout), atomically."""
    from xretrieve.core.files import atomic_write

    with atomic_write(path) as handle:
        for row in rows:
            handle.write("\t".join(row) + "\n")
