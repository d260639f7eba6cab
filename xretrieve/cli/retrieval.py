"""``xretrieve bucc`` and ``xretrieve tatoeba``: retrieval benchmarks over a data directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    print_json,
    print_table,
    progress_bars,
    reports_errors,
    threshold_text,
)
from xretrieve.cli.mine import embedding_source
from xretrieve.errors import XRetrieveError
from xretrieve.margin import Margin, MiningConfig, Mode
from xretrieve.progress import ProgressCallback


def _languages(langs: str) -> list[str]:
    names = [lang.strip() for lang in langs.split(",") if lang.strip()]
    if not names:
        raise XRetrieveError("--langs names no language")
    return names


def run_bucc(
    data_dir: Path,
    langs: list[str],
    tune_split: str,
    eval_split: str,
    model: str | None,
    emb_dir: Path | None,
    config: MiningConfig,
    progress: ProgressCallback,
) -> dict[str, dict]:
    """BUCC results per language as JSON-ready dicts (``BuccResult`` fields)."""
    from xretrieve.bucc import evaluate_bucc
    from xretrieve.embeddings import embed_pair
    from xretrieve.formats import read_bucc_split

    # Read every split first so a bad file fails before any encoding work.
    splits = {
        lang: (
            read_bucc_split(data_dir, lang, tune_split),
            read_bucc_split(data_dir, lang, eval_split),
        )
        for lang in langs
    }
    source = embedding_source(model, emb_dir, data_dir, progress)
    results = {}
    for lang, (tune, evaluation) in splits.items():
        tune_src, tune_tgt = embed_pair(source, tune.src, tune.tgt, progress)
        eval_src, eval_tgt = embed_pair(source, evaluation.src, evaluation.tgt, progress)
        result = evaluate_bucc(
            tune, tune_src, tune_tgt, evaluation, eval_src, eval_tgt, config, progress=progress
        )
        results[lang] = dataclasses.asdict(result)
    return results


def run_tatoeba(
    data_dir: Path,
    langs: list[str],
    model: str | None,
    emb_dir: Path | None,
    device: str,
    progress: ProgressCallback,
) -> dict[str, dict]:
    """Tatoeba accuracies per language as JSON-ready dicts (``TatoebaResult`` fields)."""
    from xretrieve.embeddings import embed_pair
    from xretrieve.formats import read_tatoeba
    from xretrieve.tatoeba import evaluate_tatoeba

    pairs = {lang: read_tatoeba(data_dir, lang) for lang in langs}
    source = embedding_source(model, emb_dir, data_dir, progress)
    results = {}
    for lang, pair in pairs.items():
        xx_emb, en_emb = embed_pair(source, pair.src, pair.eng, progress)
        result = evaluate_tatoeba(xx_emb, en_emb, device=device, progress=progress)
        results[lang] = dataclasses.asdict(result)
    return results


def register(app: typer.Typer) -> None:
    """Add ``bucc`` and ``tatoeba``."""

    @app.command("bucc")
    @reports_errors
    def bucc_command(
        data_dir: Annotated[
            Path, typer.Option(help="Directory with bucc2018/{xx}-en.{split}.{xx,en,gold}.")
        ],
        langs: Annotated[str, typer.Option(help="Comma-separated languages.")] = "de,fr,ru,zh",
        tune_split: Annotated[str, typer.Option(help="Split whose gold sets the threshold.")] = (
            "training"
        ),
        eval_split: Annotated[str, typer.Option(help="Split to score.")] = "test",
        model: Annotated[str | None, typer.Option(help="Encoder directory.")] = None,
        emb_dir: Annotated[
            Path | None, typer.Option(help="Embeddings directory mirroring --data-dir.")
        ] = None,
        k: Annotated[int, typer.Option(min=1, help="Neighbours for the margin.")] = 4,
        margin: Annotated[Margin, typer.Option(help="Margin function.")] = Margin.RATIO,
        mode: Annotated[Mode, typer.Option(help="Pair selection.")] = Mode.MAX,
        device: Annotated[str, typer.Option(help="kNN device: auto, cpu or cuda.")] = "auto",
        json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
        show_progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)
        ] = True,
    ) -> None:
        """BUCC 2018 mining: threshold tuned on one split, P/R/F1 (percent) on another."""
        config = MiningConfig(k=k, margin=margin, mode=mode, device=device)
        with progress_bars(show_progress) as progress:
            results = run_bucc(
                data_dir,
                _languages(langs),
                tune_split,
                eval_split,
                model,
                emb_dir,
                config,
                progress,
            )
        if json_output:
            print_json(results)
            return
        columns = ["lang", "threshold", "precision", "recall", "f1", "tune_f1", "oracle_f1"]
        rows = [
            [lang, "-" if r["threshold"] is None else threshold_text(r["threshold"])]
            + ["-" if r[c] is None else r[c] for c in columns[2:]]
            for lang, r in results.items()
        ]
        print_table(f"BUCC 2018 ({tune_split} -> {eval_split})", columns, rows)

    @app.command("tatoeba")
    @reports_errors
    def tatoeba_command(
        data_dir: Annotated[
            Path, typer.Option(help="Directory with tatoeba/tatoeba.{xxx}-eng.{xxx,eng}.")
        ],
        langs: Annotated[str, typer.Option(help="Comma-separated languages (deu,fra,...).")],
        model: Annotated[str | None, typer.Option(help="Encoder directory.")] = None,
        emb_dir: Annotated[
            Path | None, typer.Option(help="Embeddings directory mirroring --data-dir.")
        ] = None,
        device: Annotated[str, typer.Option(help="kNN device: auto, cpu or cuda.")] = "auto",
        json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
        show_progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)
        ] = True,
    ) -> None:
        """Tatoeba top-1 retrieval accuracy (percent) in both directions."""
        with progress_bars(show_progress) as progress:
            results = run_tatoeba(data_dir, _languages(langs), model, emb_dir, device, progress)
        if json_output:
            print_json(results)
            return
        rows = [
            [lang, r["accuracy_en2xx"], r["accuracy_xx2en"], r["n"]] for lang, r in results.items()
        ]
        print_table("Tatoeba accuracy", ["lang", "en2xx", "xx2en", "n"], rows)
