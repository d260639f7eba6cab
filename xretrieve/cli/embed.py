"""``xretrieve embed MODEL INPUT --out X.npy``: embed a text file, one sentence per line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    PromptOption,
    print_json,
    progress_bars,
    reports_errors,
    stderr,
)
from xretrieve.encoding.encoder import EncodeStats
from xretrieve.encoding.layers import parse_layer_indices
from xretrieve.encoding.streaming import OutputDtype


@reports_errors
def embed_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="An export directory, a Hugging Face checkpoint directory or "
            "sentence-transformers model folder (exported on first use, cached by content "
            "hash), a Hugging Face model id org/name, or 'default' (multilingual-e5-small).",
        ),
    ],
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="UTF-8 text, one sentence per line; every line is embedded, empty ones too.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output .npy: (lines, dim) of --out-dtype.")
    ],
    out_dtype: Annotated[
        OutputDtype,
        typer.Option(
            help="Element type of --out: fp32, or fp16 at half the size (mine, bucc, "
            "tatoeba and evaluate read both)."
        ),
    ] = OutputDtype.FP32,
    batch_tokens: Annotated[
        int,
        typer.Option(min=1, help="Padded tokens per batch (batch size x longest sentence in it)."),
    ] = 16384,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    backend: Annotated[str, typer.Option(help="ort (ONNX Runtime) or torch.")] = "ort",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto (fp16 on CUDA; on the CPU int8 where it keeps every held-out language "
            "within 1 point of fp32, else fp32; torch: fp32), fp16, fp32 or int8."
        ),
    ] = "auto",
    layers: Annotated[
        str | None,
        typer.Option(help="Hidden layers of a checkpoint, comma-separated (-1 = last)."),
    ] = None,
    prompt: PromptOption = None,
    all_layers: Annotated[
        bool,
        typer.Option(help="Write (lines, n_layers, dim): one vector per listed layer."),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout.")
    ] = False,
    progress: Annotated[bool, typer.Option(help=PROGRESS_HELP)] = True,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Embed on a Ray cluster (local, auto or an address): --out is then a "
            "directory of shard-NNNNN.npy files and manifest.json; a rerun resumes."
        ),
    ] = None,
    shard_lines: Annotated[
        int, typer.Option(min=1, help="With --ray: input lines per shard.")
    ] = 1_000_000,
    actors: Annotated[
        int | None,
        typer.Option(min=1, help="With --ray: encoder actors (default: one per GPU, else CPU)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="With --ray: replace shards made with other settings.")
    ] = False,
) -> None:
    """Embed every line of INPUT with MODEL and write the vectors, in line order, to --out."""
    if ray is not None:
        from xretrieve.encoding.distributed import EncoderSpec, RayEmbedder

        spec = EncoderSpec(
            model, backend, device, batch_tokens, dtype, parse_layer_indices(layers), prompt
        )
        with progress_bars(progress) as report:
            done = RayEmbedder(ray, pool_size=actors).run(
                spec,
                input_path,
                out,
                shard_lines=shard_lines,
                out_dtype=out_dtype,
                layer_outputs=all_layers,
                overwrite=overwrite,
                progress=report,
            )
        stderr.print(
            f"{out}: {done.embedded} shards embedded, {done.skipped} already complete, "
            f"{done.shape}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        from xretrieve.encoding.streaming import embed_model_file

        with progress_bars(progress) as report:
            done = embed_model_file(
                model,
                input_path,
                out,
                backend=backend,
                device=device,
                batch_tokens=batch_tokens,
                dtype=dtype,
                layers=parse_layer_indices(layers),
                layer_outputs=all_layers,
                out_dtype=out_dtype,
                progress=report,
                prompt=prompt,
                on_loaded=lambda encoder: stderr.print(
                    f"provider: {encoder.provider}", highlight=False
                ),
            )
        _print_rates(out, done.file.stats, done.file.shape)
    if json_output:
        print_json(done.to_json())


def _print_rates(out: Path, stats: EncodeStats, shape: tuple[int, ...]) -> None:
    """The truncation warning (if any lines were truncated) and the throughput, on stderr."""
    if stats.truncated:
        stderr.print(
            f"[yellow]{stats.truncated} of {stats.sentences} lines were longer than "
            f"{stats.max_length} tokens and were truncated[/]",
            highlight=False,
            soft_wrap=True,
        )
    stderr.print(
        f"embedded {stats.sentences} lines into {out} {shape} in {stats.seconds:.2f} s "
        f"({stats.sentences_per_s:.0f} sentences/s, {stats.tokens_per_s:.0f} tokens/s)",
        highlight=False,
        soft_wrap=True,
    )
