"""``xretrieve mine``: margin-based bitext mining between two sentence files.

Output of ``--out``: TSV without a header line (LASER's mined-bitext files have none, so tools
reading those read these), one row per mined pair above the threshold, best first:
``score<TAB>src_id<TAB>tgt_id<TAB>src_text<TAB>tgt_text``. An id column is present only when its
side has ids (BUCC TSV input). Mining runs over distinct texts; a mined text that occurs under
several ids gives one row per id combination.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    PromptOption,
    finite_float,
    print_json,
    print_table,
    progress_bars,
    reports_errors,
    stdout,
    threshold_text,
)
from xretrieve.core.errors import XRetrieveError
from xretrieve.core.sizes import parse_bytes
from xretrieve.index.search import (
    DEFAULT_CANDIDATE_FACTOR,
    DEFAULT_INDEX_K,
    SearchConfig,
)
from xretrieve.mining.api import DEFAULT_RATIO_THRESHOLD
from xretrieve.mining.bitext import MineRequest, MiningReport
from xretrieve.mining.margin import Margin, MiningConfig, Mode
from xretrieve.mining.streaming import Streaming
from xretrieve.mining.through_index import IndexMining

PREVIEW_PAIRS = 5

# The summary table's labels say what its counts count (the JSON keeps the short keys).
_LABELS = {
    "candidates": "candidates (pairs of distinct texts kept by --mode, any score)",
    "pairs": "pairs (candidates with score >= threshold)",
    "rows": "rows (pairs, one per id of a repeated text: lines of --out)",
    "nprobe": "nprobe (inverted lists visited per query)",
}


def _shown(key: str, value: Any) -> Any:
    if value is None:
        return "-"
    if isinstance(value, dict):  # per index: nprobe where the two indexes differ
        return ", ".join(
            f"{name.replace('_', ' ')} {'-' if v is None else v}" for name, v in value.items()
        )
    return threshold_text(value) if key == "threshold" else value


def print_report(report: MiningReport) -> None:
    """The summary table and the first pairs, best first."""
    print_table(
        f"mine {report.input}",
        ["measure", "value"],
        [[_LABELS.get(key, key), _shown(key, value)] for key, value in report.summary().items()],
    )
    if report.rows:
        preview = [
            [row[0], textwrap.shorten(row[-2], 60, placeholder=" …"),
             textwrap.shorten(row[-1], 60, placeholder=" …")]
            for row in report.rows[:PREVIEW_PAIRS]
        ]  # fmt: skip
        print_table(f"first {len(preview)} pairs", ["score", "source", "target"], preview)
    else:
        stdout.print("no pair reaches the threshold")


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
        str | None,
        typer.Option(
            help="Encoder: export, checkpoint or sentence-transformers directory, or a "
            "Hugging Face id."
        ),
    ] = None,
    text_prefix: Annotated[
        str | None,
        typer.Option(help="Prepended to every text (default: the model's own prefix)."),
    ] = None,
    prompt: PromptOption = None,
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
            help="Keep pairs with score >= this (default: the model's calibrated ratio "
            f"threshold, else {DEFAULT_RATIO_THRESHOLD} for the ratio margin)",
            callback=finite_float,
        ),
    ] = None,
    tune_split: Annotated[
        str | None, typer.Option(help="Choose the threshold on this split's gold.")
    ] = None,
    gold: Annotated[
        Path | None, typer.Option(help="Gold src_id<TAB>tgt_id pairs for P/R/F1.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write mined pairs as TSV.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON summary on stdout.")] = False,
    device: Annotated[str, typer.Option(help="kNN device: auto, cpu or cuda.")] = "auto",
    gpu_memory: Annotated[
        int | None,
        typer.Option(
            parser=parse_bytes,
            metavar="SIZE",
            help="Device memory the GPU search may use, e.g. 16GB or 512MiB (default: 80 % "
            "of the free memory); larger inputs stream through in blocks.",
        ),
    ] = None,
    show_progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)
    ] = True,
    src_index: Annotated[
        Path | None, typer.Option(help="Source index directory ('xretrieve index build').")
    ] = None,
    tgt_index: Annotated[Path | None, typer.Option(help="Target index directory.")] = None,
    nprobe: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Inverted lists visited per query (indexes; default: a quarter of the "
            "index's lists, 128 to 256).",
        ),
    ] = None,
    rescore: Annotated[
        bool, typer.Option(help="Exact similarities for the index's candidates.")
    ] = True,
    candidate_factor: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --rescore: re-score this many times k candidates from the index "
            "and keep the k best (1: re-order the index's own top k).",
        ),
    ] = DEFAULT_CANDIDATE_FACTOR,
    ray: Annotated[
        str | None,
        typer.Option(help="Search the indexes on Ray: local, auto or a cluster address."),
    ] = None,
    stream: Annotated[
        Streaming,
        typer.Option(
            help="Indexes: score margins and select pairs through files instead of holding "
            "the neighbour lists (auto: when they would not fit in memory, or with --work-dir)."
        ),
    ] = Streaming.AUTO,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Indexes: the streamed mining's directory (candidate shards, pairs in parts); "
            "shared storage with --ray; a rerun continues there (default: a temporary one)."
        ),
    ] = None,
) -> None:
    """Mine parallel sentence pairs with margin scoring (default: the bundled de-en sample)."""
    from xretrieve.mining.bitext import mine_bitext

    search = SearchConfig(nprobe=nprobe, rescore=rescore, candidate_factor=candidate_factor)
    indexes = _index_mining(src_index, tgt_index, search, ray, stream, work_dir)
    if k is None:
        k = DEFAULT_INDEX_K if indexes is not None else 4
    request = MineRequest(
        src_lang=src, tgt_lang=tgt, src_file=src_file, tgt_file=tgt_file, data_dir=data_dir,
        split=split, gold_file=gold, model=model, text_prefix=text_prefix, prompt=prompt,
        src_emb=src_emb, tgt_emb=tgt_emb, emb_dir=emb_dir, threshold=threshold,
        tune_split=tune_split, out=out,
        config=MiningConfig(k=k, margin=margin, mode=mode, device=device, gpu_memory=gpu_memory),
        indexes=indexes,
    )  # fmt: skip
    with progress_bars(show_progress) as progress:
        report = mine_bitext(request, progress)
    if json_output:
        print_json(report.summary())
    else:
        print_report(report)


def _index_mining(
    src_index: Path | None,
    tgt_index: Path | None,
    search: SearchConfig,
    ray: str | None,
    stream: Streaming = Streaming.AUTO,
    work_dir: Path | None = None,
) -> IndexMining | None:
    """``--src-index``/``--tgt-index`` (and ``--ray``, ``--stream``, ``--work-dir``) as the
    request's indexes; None without."""
    streamed = stream is not Streaming.AUTO or work_dir is not None
    if src_index is None and tgt_index is None and ray is None and not streamed:
        return None
    if src_index is None or tgt_index is None:
        raise XRetrieveError(
            "give both --src-index and --tgt-index (--ray, --stream and --work-dir need them)"
        )
    return IndexMining(src_index, tgt_index, search, ray, stream, work_dir)
