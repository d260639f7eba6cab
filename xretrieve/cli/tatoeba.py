"""``xretrieve tatoeba``: Tatoeba top-1 retrieval accuracy over a data directory."""

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
)


@reports_errors
def tatoeba_command(
    data_dir: Annotated[
        Path, typer.Option(help="Directory with tatoeba/tatoeba.{xxx}-eng.{xxx,eng}.")
    ],
    langs: Annotated[str, typer.Option(help="Comma-separated languages (deu,fra,...).")],
    model: ModelOption = None,
    text_prefix: TextPrefixOption = None,
    emb_dir: EmbDirOption = None,
    device: KnnDeviceOption = "auto",
    json_output: JsonOption = False,
    show_progress: ProgressOption = True,
) -> None:
    """Tatoeba top-1 retrieval accuracy (percent) in both directions."""
    from xretrieve.evaluation.retrieval import evaluate_tatoeba

    with progress_bars(show_progress) as progress:
        results = evaluate_tatoeba(
            data_dir,
            langs.split(","),
            model=model,
            emb_dir=emb_dir,
            device=device,
            text_prefix=text_prefix,
            progress=progress,
        )
    if json_output:
        print_json(results)
        return
    rows = [[lang, r.accuracy_en2xx, r.accuracy_xx2en, r.n] for lang, r in results.items()]
    print_table("Tatoeba accuracy", ["lang", "en2xx", "xx2en", "n"], rows)
