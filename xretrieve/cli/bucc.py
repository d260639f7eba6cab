"""``xretrieve bucc``: BUCC 2018 bitext mining over a data directory, threshold tuned on one
split and P/R/F1 scored on another."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    EmbDirOption,
    JsonOption,
    KnnDeviceOption,
    ModelOption,
    ProgressOption,
    TextPrefixOption,
    print_json,
    print_table,
    progress_bars,
    reports_errors,
    threshold_text,
)
from xretrieve.mining.margin import Margin, Mode


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
    model: ModelOption = None,
    text_prefix: TextPrefixOption = None,
    emb_dir: EmbDirOption = None,
    k: Annotated[int, typer.Option(min=1, help="Neighbours for the margin.")] = 4,
    margin: Annotated[Margin, typer.Option(help="Margin function.")] = Margin.RATIO,
    mode: Annotated[Mode, typer.Option(help="Pair selection.")] = Mode.MAX,
    device: KnnDeviceOption = "auto",
    json_output: JsonOption = False,
    show_progress: ProgressOption = True,
) -> None:
    """BUCC 2018 mining: threshold tuned on one split, P/R/F1 (percent) on another."""
    from xretrieve.evaluation.retrieval import evaluate_bucc

    with progress_bars(show_progress) as progress:
        results = evaluate_bucc(
            data_dir,
            langs.split(","),
            model=model,
            emb_dir=emb_dir,
            tune_split=tune_split,
            eval_split=eval_split,
            k=k,
            margin=margin,
            mode=mode,
            device=device,
            text_prefix=text_prefix,
            progress=progress,
        )
    if json_output:
        print_json(results)
        return
    rows = [
        [lang, "-" if r.threshold is None else threshold_text(r.threshold),
         *("-" if value is None else value
           for value in (r.precision, r.recall, r.f1, r.tune_f1, r.oracle_f1))]
        for lang, r in results.items()
    ]  # fmt: skip
    columns = ["lang", "threshold", "precision", "recall", "f1", "tune_f1", "oracle_f1"]
    print_table(f"BUCC 2018 ({tune_split} -> {eval_split})", columns, rows)
