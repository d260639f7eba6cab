"""``xretrieve bench``: embedding throughput and kNN + margin speed, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    print_json,
    print_table,
    progress_bars,
    reports_errors,
    stderr,
)


@reports_errors
def bench_command(
    model: Annotated[
        str | None,
        typer.Argument(help="Checkpoint or export directory (default: the default model)."),
    ] = None,
    backends: Annotated[str, typer.Option(help="Comma-separated: ort, torch.")] = "ort,torch",
    dtypes: Annotated[
        str | None,
        typer.Option(help="Comma-separated: fp16, fp32 (default: fp16,fp32 on a GPU, else fp32)."),
    ] = None,
    batch_tokens: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Tokens per batch; repeat the option to compare several."),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="Sentences to embed, one per line (default: generated ones)."),
    ] = None,
    sentences: Annotated[
        int | None,
        typer.Option(
            min=1, help="Sentences to embed (default 2000 generated, or all of --corpus)."
        ),
    ] = None,
    knn_size: Annotated[
        int, typer.Option(min=0, help="Rows per side of the kNN + margin run (0 skips it).")
    ] = 10000,
    k: Annotated[int, typer.Option(min=1, help="Neighbours for the margin.")] = 4,
    device: Annotated[str, typer.Option(help="Encoder device: auto, cpu or cuda.")] = "auto",
    text_prefix: Annotated[
        str | None,
        typer.Option(help="Prepended to every text (default: the model's own prefix)."),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs each (fastest kept).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the generated sentences and vectors.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also write a bar chart PNG here.")] = None,
    show_progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)
    ] = True,
) -> None:
    """Embedding throughput (per backend, dtype and batch budget) and kNN + margin speed
    (FAISS CPU, torch CPU; torch CUDA and FAISS GPU where a GPU exists), side by side."""
    from xretrieve.bench import data, embedding, machine, run
    from xretrieve.core.devices import torch_cuda_available
    from xretrieve.core.outputs import check_output_path
    from xretrieve.formats import read_text_corpus

    if plot is not None:
        check_output_path(plot, option="--plot")
    backend_names = machine.parse_names(backends, embedding.BACKENDS, "--backends")
    if dtypes is None:
        dtype_names = ("fp16", "fp32") if torch_cuda_available() else ("fp32",)
    else:
        dtype_names = machine.parse_names(dtypes, embedding.DTYPES, "--dtypes")
    if corpus is not None:
        texts = read_text_corpus(corpus).texts[:sentences]
    else:
        texts = tuple(data.make_sentences(sentences or 2000, seed))
    config = run.BenchConfig(
        model=model,
        texts=texts,
        corpus=corpus,
        backends=backend_names,
        dtypes=dtype_names,
        batch_tokens=tuple(batch_tokens or (16384,)),
        device=device,
        repeats=repeats,
        knn_size=knn_size,
        k=k,
        seed=seed,
        text_prefix=text_prefix,
    )
    with progress_bars(show_progress) as progress:
        report = run.run_bench(config, progress=progress)
    payload = run.report_dict(report)
    if plot is not None:
        run.plot_report(report, plot)
    if json_output:
        print_json(payload)
    else:
        _print_bench_tables(payload)
    for failure in payload["embedding_errors"]:
        stderr.print(
            f"[bold red]failed:[/] {failure['backend']} {failure['dtype']} "
            f"{failure['batch_tokens']}: {failure['error']}",
            highlight=False,
            soft_wrap=True,
        )
    if payload["embedding_errors"]:
        raise typer.Exit(1)


def _print_bench_tables(payload: dict) -> None:
    def number(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    print_table(
        f"Embedding: {payload['model']}, {payload['workload']['sentences']} sentences",
        ["setting", "provider", "sent/s", "tok/s", "batch p50/p95 ms", "pad eff", "RSS MB",
         "GPU MB", "vs torch"],
        [
            [f"{r['backend']} {r['dtype']} {r['batch_tokens']}",
             r["provider"].removesuffix("ExecutionProvider"), number(r["sentences_per_s"]),
             number(r["tokens_per_s"]),
             f"{number(r['batch_p50_ms'], 1)} / {number(r['batch_p95_ms'], 1)}",
             number(r["padding_efficiency"], 3), number(r["peak_rss_mb"]),
             number(r["peak_gpu_mb"]), number(r["speedup_vs_torch_same_dtype"], 2)]
            for r in payload["embedding"]
        ],
    )  # fmt: skip
    knn = payload["knn"]
    if knn["results"]:
        print_table(
            f"kNN both ways + ratio margin + max: {knn['rows']} rows each, dim {knn['dim']}, "
            f"k {knn['k']}",
            ["method", "total s", "kNN s", "margin s", "pairs", "agree", "vs faiss_cpu"],
            [
                [r["method"], number(r["seconds"], 4), number(r["knn_seconds"], 4),
                 number(r["margin_seconds"], 4), r["pairs"], number(r["pair_agreement"], 4),
                 number(r["speedup_vs_faiss_cpu"], 2)]
                for r in knn["results"]
            ],
        )  # fmt: skip
