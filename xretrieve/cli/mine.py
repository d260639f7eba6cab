"""``xretrieve mine``: margin-based bitext mining between two sentence files.

Output of ``--out``: TSV without a header line (LASER's mined-bitext files have none, so tools
reading those read these), one row per mined pair above the threshold, best first:
``score<TAB>src_id<TAB>tgt_id<TAB>src_text<TAB>tgt_text``. An id column is present only when its
side has ids (BUCC TSV input). Mining runs over distinct texts; a mined text that occurs under
several ids gives one row per id combination.
"""

from __future__ import annotations

import importlib.resources
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from xretrieve.bucc import CorpusMining
from xretrieve.cli.common import print_json, print_table, progress_bars, reports_errors, stdout
from xretrieve.embeddings import EmbeddingSource
from xretrieve.errors import XRetrieveError
from xretrieve.formats import Corpus
from xretrieve.index.mining import IndexMining
from xretrieve.index.search import DEFAULT_INDEX_K, DEFAULT_NPROBE, SearchConfig
from xretrieve.margin import Margin, MiningConfig, Mode
from xretrieve.progress import ProgressCallback

# Threshold for the ratio margin when neither --threshold nor --tune-split is given: LASER's
# mined corpora (WikiMatrix, CCMatrix) keep ratio-margin scores around 1.04-1.06.
DEFAULT_RATIO_THRESHOLD = 1.05
PREVIEW_PAIRS = 5


def sample_data_dir() -> Path:
    """The bundled sample data directory (``xretrieve/sample_data``)."""
    return Path(str(importlib.resources.files("xretrieve") / "sample_data"))


def embedding_source(
    model: str | None,
    emb_dir: Path | None,
    data_dir: Path | None,
    progress: ProgressCallback | None = None,
) -> EmbeddingSource:
    """The ``EmbeddingSource`` for ``--model`` or ``--emb-dir`` (the default model when neither
    is given). ``--emb-dir`` mirrors ``data_dir``. ``progress`` sees the first-use conversion
    and export of a model."""
    from xretrieve.embeddings import DirectorySource, EncoderSource

    if emb_dir is not None:
        if model is not None:
            raise XRetrieveError("give either --model or --emb-dir, not both")
        if data_dir is None:
            raise XRetrieveError("--emb-dir mirrors a data directory: give --data-dir too")
        return DirectorySource(emb_dir, data_dir)
    from xretrieve.encoding import load_encoder

    return EncoderSource(load_encoder(model, progress=progress))


@dataclass(frozen=True)
class _Inputs:
    src: Corpus
    tgt: Corpus
    gold: frozenset[tuple[str, str]] | None
    data_dir: Path | None
    label: str


def _read_inputs(
    src_lang: str,
    tgt_lang: str,
    src_file: Path | None,
    tgt_file: Path | None,
    data_dir: Path | None,
    split: str,
    gold_file: Path | None,
) -> _Inputs:
    from xretrieve.formats import read_bucc_gold, read_bucc_split, read_corpus

    if src_file is not None or tgt_file is not None:
        if src_file is None or tgt_file is None:
            raise XRetrieveError("give both --src-file and --tgt-file")
        if data_dir is not None:
            raise XRetrieveError("give either --src-file/--tgt-file or --data-dir, not both")
        src, tgt = read_corpus(src_file), read_corpus(tgt_file)
        gold = read_bucc_gold(gold_file, src, tgt) if gold_file else None
        return _Inputs(src, tgt, gold, None, f"{src_file.name} - {tgt_file.name}")
    if tgt_lang != "en":
        raise XRetrieveError("the BUCC layout pairs a language with English: use --tgt en")
    root = data_dir if data_dir is not None else sample_data_dir()
    split = split if data_dir is not None else "sample"
    bucc = read_bucc_split(root, src_lang, split)
    gold = read_bucc_gold(gold_file, bucc.src, bucc.tgt) if gold_file else bucc.gold
    return _Inputs(bucc.src, bucc.tgt, gold, root, f"{src_lang}-en {split}")


def _rows_of_distinct(inverse: np.ndarray) -> list[np.ndarray]:
    """For each distinct text, the corpus rows holding it."""
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def _pair_rows(inputs: _Inputs, mining: CorpusMining, selected: np.ndarray) -> list[list[str]]:
    """Output rows (score, [src_id], [tgt_id], src_text, tgt_text) of the selected pairs."""
    src_groups = _rows_of_distinct(mining.src_inverse)
    tgt_groups = _rows_of_distinct(mining.tgt_inverse)
    rows: list[list[str]] = []
    pairs = mining.pairs
    for position in selected.tolist():
        score = f"{float(pairs.score[position]):.9g}"
        src_rows = src_groups[int(pairs.src_index[position])].tolist()
        tgt_rows = tgt_groups[int(pairs.tgt_index[position])].tolist()
        src_text = inputs.src.texts[src_rows[0]]
        tgt_text = inputs.tgt.texts[tgt_rows[0]]
        src_ids = [inputs.src.ids[r] for r in src_rows] if inputs.src.ids else [None]
        tgt_ids = [inputs.tgt.ids[r] for r in tgt_rows] if inputs.tgt.ids else [None]
        for src_id in src_ids:
            for tgt_id in tgt_ids:
                ids = [i for i in (src_id, tgt_id) if i is not None]
                rows.append([score, *ids, src_text, tgt_text])
    return rows


def _write_tsv(path: Path, rows: list[list[str]]) -> None:
    from xretrieve.files import atomic_write

    with atomic_write(path) as handle:
        for row in rows:
            handle.write("\t".join(row) + "\n")


def _embed_inputs(
    inputs: _Inputs,
    src_emb: Path | None,
    tgt_emb: Path | None,
    model: str | None,
    emb_dir: Path | None,
    progress: ProgressCallback,
) -> tuple[np.ndarray, np.ndarray, EmbeddingSource | None]:
    """Source and target embeddings, and the source they came from (None for --src/tgt-emb),
    so that a tuning split is embedded by the same, already loaded, encoder."""
    from xretrieve.embeddings import embed_pair
    from xretrieve.formats import read_embeddings

    if src_emb is not None or tgt_emb is not None:
        if src_emb is None or tgt_emb is None:
            raise XRetrieveError("give both --src-emb and --tgt-emb")
        if model is not None:
            raise XRetrieveError("give either --model or --src-emb/--tgt-emb, not both")
        src_matrix = read_embeddings(src_emb, rows=len(inputs.src))
        tgt_matrix = read_embeddings(tgt_emb, rows=len(inputs.tgt), dim=src_matrix.shape[1])
        return src_matrix, tgt_matrix, None
    source = embedding_source(model, emb_dir, inputs.data_dir, progress)
    return (*embed_pair(source, inputs.src, inputs.tgt, progress), source)


def run_mine(
    *,
    src_lang: str,
    tgt_lang: str,
    src_file: Path | None,
    tgt_file: Path | None,
    data_dir: Path | None,
    split: str,
    model: str | None,
    src_emb: Path | None,
    tgt_emb: Path | None,
    emb_dir: Path | None,
    config: MiningConfig,
    threshold: float | None,
    tune_split: str | None,
    gold_file: Path | None,
    out: Path | None,
    json_output: bool,
    show_progress: bool,
    indexes: IndexMining | None = None,
) -> None:
    """The ``mine`` command's work (parsing done by typer)."""
    from xretrieve.bucc import (
        gold_mask,
        id_candidates,
        mine_corpora,
        precision_recall_f1,
        tune_threshold,
    )
    from xretrieve.embeddings import embed_pair
    from xretrieve.formats import read_bucc_split

    if threshold is not None and tune_split is not None:
        raise XRetrieveError("give either --threshold or --tune-split, not both")
    if tune_split is not None and data_dir is None:
        raise XRetrieveError("--tune-split reads DIR's gold: give --data-dir")
    if tune_split is not None and src_emb is not None and emb_dir is None:
        raise XRetrieveError("--tune-split needs embeddings of the tuning split: give --emb-dir")
    if indexes is not None and (src_emb or tgt_emb or model or emb_dir or tune_split):
        raise XRetrieveError(
            "--src-index/--tgt-index replace --src-emb/--tgt-emb, --model, --emb-dir and "
            "--tune-split: give only the indexes (and --threshold)"
        )
    inputs = _read_inputs(src_lang, tgt_lang, src_file, tgt_file, data_dir, split, gold_file)
    summary: dict[str, Any] = {"input": inputs.label}
    with progress_bars(show_progress) as progress:
        if indexes is not None:
            src_matrix = tgt_matrix = source = None
        else:
            src_matrix, tgt_matrix, source = _embed_inputs(
                inputs, src_emb, tgt_emb, model, emb_dir, progress
            )
        threshold_source = "given" if threshold is not None else "none"
        if tune_split is not None:
            tune = read_bucc_split(data_dir, src_lang, tune_split)
            source = source or embedding_source(model, emb_dir, data_dir, progress)
            tune_src, tune_tgt = embed_pair(source, tune.src, tune.tgt, progress)
            threshold, tune_f1 = tune_threshold(tune, tune_src, tune_tgt, config, progress=progress)
            threshold_source = "tuned"
            summary["tune_split"] = tune_split
            summary["tune_f1"] = tune_f1
        elif threshold is None and config.margin is Margin.RATIO:
            threshold, threshold_source = DEFAULT_RATIO_THRESHOLD, "default"
        if indexes is not None:
            from xretrieve.index.mining import mine_corpora_with_indexes

            mining = mine_corpora_with_indexes(
                inputs.src, inputs.tgt, indexes, config, progress=progress
            )
        else:
            mining = mine_corpora(
                inputs.src, inputs.tgt, src_matrix, tgt_matrix, config, progress=progress
            )
    cut = -math.inf if threshold is None else threshold
    selected = np.flatnonzero(mining.pairs.score.astype(np.float64) >= cut)
    rows = _pair_rows(inputs, mining, selected)
    summary |= {
        "src_sentences": len(inputs.src),
        "tgt_sentences": len(inputs.tgt),
        "src_distinct": int(mining.src_rows.size),
        "tgt_distinct": int(mining.tgt_rows.size),
        "k": config.k,
        "margin": config.margin.value,
        "mode": config.mode.value,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "candidates": len(mining.pairs),
        "pairs": int(selected.size),
        "rows": len(rows),
    }
    if indexes is not None:
        summary |= {"nprobe": indexes.search.nprobe, "rescore": indexes.search.rescore}
    if inputs.gold is not None:
        candidates = id_candidates(mining, inputs.src, inputs.tgt)
        correct = gold_mask(candidates, inputs.gold, inputs.src, inputs.tgt)
        precision, recall, f1, _ = precision_recall_f1(
            candidates.score, correct, len(inputs.gold), cut
        )
        summary |= {"gold": len(inputs.gold), "precision": precision, "recall": recall, "f1": f1}
    if out is not None:
        _write_tsv(out, rows)
        summary["out"] = str(out)
    if json_output:
        print_json(summary)
        return
    print_table(
        f"mine {inputs.label}",
        ["measure", "value"],
        [[key, "-" if value is None else value] for key, value in summary.items()],
    )
    if rows:
        preview = [
            [row[0], textwrap.shorten(row[-2], 60, placeholder=" …"),
             textwrap.shorten(row[-1], 60, placeholder=" …")]
            for row in rows[:PREVIEW_PAIRS]
        ]  # fmt: skip
        print_table(f"first {len(preview)} pairs", ["score", "source", "target"], preview)
    else:
        stdout.print("no pair reaches the threshold")


def register(app: typer.Typer) -> None:
    """Add ``mine``."""

    @app.command("mine")
    @reports_errors
    def mine_command(
        src: Annotated[str, typer.Option(help="Source language code.")] = "de",
        tgt: Annotated[str, typer.Option(help="Target language code.")] = "en",
        src_file: Annotated[
            Path | None, typer.Option(help="Source sentences: plain text or BUCC id<TAB>text.")
        ] = None,
        tgt_file: Annotated[Path | None, typer.Option(help="Target sentences.")] = None,
        data_dir: Annotated[
            Path | None, typer.Option(help="Data directory with bucc2018/{src}-en.{split}.*")
        ] = None,
        split: Annotated[str, typer.Option(help="BUCC split to mine in --data-dir.")] = "test",
        model: Annotated[
            str | None, typer.Option(help="Encoder: export or checkpoint directory.")
        ] = None,
        src_emb: Annotated[Path | None, typer.Option(help="Source embeddings (.npy).")] = None,
        tgt_emb: Annotated[Path | None, typer.Option(help="Target embeddings (.npy).")] = None,
        emb_dir: Annotated[
            Path | None, typer.Option(help="Embeddings directory mirroring --data-dir.")
        ] = None,
        k: Annotated[
            int | None,
            typer.Option(min=1, help="Neighbours for the margin (default 4; 16 with indexes)."),
        ] = None,
        margin: Annotated[Margin, typer.Option(help="Margin function.")] = Margin.RATIO,
        mode: Annotated[Mode, typer.Option(help="Pair selection.")] = Mode.MAX,
        threshold: Annotated[
            float | None,
            typer.Option(
                help=f"Keep pairs with score >= this (ratio margin default: {DEFAULT_RATIO_THRESHOLD})"
            ),
        ] = None,
        tune_split: Annotated[
            str | None, typer.Option(help="Choose the threshold on this split's gold.")
        ] = None,
        gold: Annotated[
            Path | None, typer.Option(help="Gold src_id<TAB>tgt_id pairs for P/R/F1.")
        ] = None,
        out: Annotated[Path | None, typer.Option(help="Write mined pairs as TSV.")] = None,
        json_output: Annotated[
            bool, typer.Option("--json", help="JSON summary on stdout.")
        ] = False,
        device: Annotated[str, typer.Option(help="kNN device: auto, cpu or cuda.")] = "auto",
        show_progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
        src_index: Annotated[
            Path | None, typer.Option(help="Source index directory ('xretrieve index build').")
        ] = None,
        tgt_index: Annotated[Path | None, typer.Option(help="Target index directory.")] = None,
        nprobe: Annotated[
            int, typer.Option(min=1, help="Inverted lists visited per query (indexes).")
        ] = DEFAULT_NPROBE,
        rescore: Annotated[
            bool, typer.Option(help="Exact similarities for the index's candidates.")
        ] = True,
        ray: Annotated[
            str | None,
            typer.Option(help="Search the indexes on Ray: local, auto or a cluster address."),
        ] = None,
    ) -> None:
        """Mine parallel sentence pairs with margin scoring (default: the bundled de-en sample)."""
        indexes = None
        if src_index is not None or tgt_index is not None or ray is not None:
            if src_index is None or tgt_index is None:
                raise XRetrieveError("give both --src-index and --tgt-index (--ray needs them)")
            search = SearchConfig(nprobe=nprobe, rescore=rescore)
            indexes = IndexMining(src_index, tgt_index, search, ray)
        if k is None:
            k = DEFAULT_INDEX_K if indexes is not None else 4
        run_mine(
            src_lang=src,
            tgt_lang=tgt,
            src_file=src_file,
            tgt_file=tgt_file,
            data_dir=data_dir,
            split=split,
            model=model,
            src_emb=src_emb,
            tgt_emb=tgt_emb,
            emb_dir=emb_dir,
            config=MiningConfig(k=k, margin=margin, mode=mode, device=device),
            threshold=threshold,
            tune_split=tune_split,
            gold_file=gold,
            out=out,
            json_output=json_output,
            show_progress=show_progress,
            indexes=indexes,
        )
