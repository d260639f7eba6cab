"""``xretrieve evaluate``: checkpoints -> leaderboard, per-language and resource-group reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    print_table,
    progress_bars,
    reports_errors,
    stderr,
)
from xretrieve.mining.margin import Margin, MiningConfig, Mode


def _split_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    return names or None


@reports_errors
def evaluate_command(
    models: Annotated[
        list[str],
        typer.Argument(help="Checkpoint or export directories ('default' = the default model)."),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(
            help="Directory with bucc2018/, tatoeba/ and image_text/ in the layouts of "
            "`xretrieve bucc`, `xretrieve tatoeba` and docs/formats.md."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Results directory (re-use it to resume).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated: bucc, tatoeba, image-text.")] = (
        "bucc,tatoeba"
    ),
    langs: Annotated[
        str | None, typer.Option(help="Comma-separated languages (default: all found).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Checkpoint the others are compared with (Δ columns).")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="'all' (1..L) or hidden-state indices like 8,12,-1 (default: last)."),
    ] = None,
    resource_groups: Annotated[
        Path | None,
        typer.Option(help="JSON {lang: group} or TSV lang<TAB>group overriding Joshi et al."),
    ] = None,
    tune_split: Annotated[str, typer.Option(help="BUCC split that sets the threshold.")] = (
        "training"
    ),
    eval_split: Annotated[str, typer.Option(help="BUCC split that is scored.")] = "test",
    k: Annotated[int, typer.Option(min=1, help="Neighbours for the BUCC margin.")] = 4,
    margin: Annotated[Margin, typer.Option(help="BUCC margin function.")] = Margin.RATIO,
    mode: Annotated[Mode, typer.Option(help="BUCC pair selection.")] = Mode.MAX,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 12345,
    backend: Annotated[str, typer.Option(help="Encoder backend: ort or torch.")] = "ort",
    text_prefix: Annotated[
        str | None,
        typer.Option(help="Prepended to every text (default: each checkpoint's own prefix)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_tokens: Annotated[int, typer.Option(min=1, help="Tokens per batch.")] = 16384,
    cache: Annotated[
        Path | None,
        typer.Option(help="Embedding cache directory (default: <cache dir>/embeddings)."),
    ] = None,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write plots/*.png with the reports.")
    ] = True,
    show_progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)
    ] = True,
) -> None:
    """Evaluate checkpoints on BUCC / Tatoeba / image-text; write results.jsonl, results.csv,
    leaderboard.md, groups.csv and plots/ under --out. Exit code 1 if any language failed."""
    from xretrieve.evaluation import EvaluationConfig, parse_layers
    from xretrieve.evaluation import evaluate as run_evaluation
    from xretrieve.evaluation.resources import load_resource_groups
    from xretrieve.evaluation.tasks import ScoringSettings

    scoring = ScoringSettings(
        resamples=resamples,
        seed=seed,
        device=device,
        mining=MiningConfig(k=k, margin=margin, mode=mode, device=device),
        bucc_tune_split=tune_split,
        bucc_eval_split=eval_split,
    )
    config = EvaluationConfig(
        models=tuple(models),
        data_dir=data_dir,
        out_dir=out,
        tasks=_split_list(tasks) or ("bucc", "tatoeba"),
        langs=_split_list(langs),
        baseline=baseline,
        layers=parse_layers(layers),
        scoring=scoring,
        backend=backend,
        device=device,
        batch_tokens=batch_tokens,
        cache_root=cache,
        resource_groups=load_resource_groups(resource_groups) if resource_groups else None,
        plots=plots,
        text_prefix=text_prefix,
    )
    with progress_bars(show_progress) as progress:
        summary = run_evaluation(config, progress=progress)
    stderr.print(
        f"scored {summary.scored_units} units, {summary.skipped_units} already done; "
        f"encoded {summary.encoded_texts} new texts; wrote {out}/leaderboard.md",
        highlight=False,
    )
    rows = [
        [
            row.checkpoint,
            row.layer,
            row.task,
            row.lang,
            row.metric,
            row.value,
            "" if row.ci_low is None else f"[{row.ci_low:.2f}, {row.ci_high:.2f}]",
        ]
        for row in summary.rows
        if row.metric in {"f1", "accuracy_en2xx", "r1_mean"}
    ]
    if rows:
        print_table(
            "Primary metrics",
            ["checkpoint", "layer", "task", "lang", "metric", "value", "95% CI"],
            rows,
        )
    if summary.failures:
        for row in summary.failures:
            stderr.print(
                f"[bold red]failed:[/] {row.checkpoint} layer {row.layer} {row.task}/{row.lang}: "
                f"{row.error}",
                highlight=False,
                soft_wrap=True,
            )
        langs_failed = sorted({f"{row.task}/{row.lang}" for row in summary.failures})
        stderr.print(f"{len(langs_failed)} language(s) failed: {', '.join(langs_failed)}")
        raise typer.Exit(1)
