"""``xretrieve index build`` and ``xretrieve index verify``: approximate FAISS indexes for
``xretrieve mine --src-index/--tgt-index``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xretrieve.cli.common import (
    PROGRESS_HELP,
    Command,
    print_json,
    print_table,
    progress_bars,
    reports_errors,
    stderr,
    stdout,
)

app = typer.Typer(
    help="Approximate FAISS indexes (sharded, with a manifest) for mining large corpora.",
    no_args_is_help=True,
)


@app.command("build", cls=Command)
@reports_errors
def build(
    embeddings: Annotated[
        list[Path],
        typer.Argument(
            metavar="EMB.npy",
            help="Embedding files (float16/float32 .npy, one dimension) or embed --ray "
            "directories (their shards in order), rows concatenated in the order given.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Index directory to write: new, empty or an earlier index (replaced); never "
            "an input, a folder holding one, the current directory or a file.",
        ),
    ],
    factory: Annotated[
        str | None,
        typer.Option(
            help="FAISS index_factory string (default: Flat up to 10k rows, else on a GPU "
            "OPQ64,IVF{N},PQ64 with N by size, as stopes; on a CPU IVF{N},PQ64 with N at most "
            "4096, no OPQ)."
        ),
    ] = None,
    train_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Rows in the training sample (default: ~100 per IVF list on a GPU, ~40 on a "
            "CPU; at least 65536, at most all rows).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the training sample.")] = 0,
    shard_rows: Annotated[int, typer.Option(min=1, help="Rows per shard file.")] = 1_000_000,
    block_rows: Annotated[int, typer.Option(min=1, help="Rows converted per step.")] = 65_536,
    device: Annotated[
        str,
        typer.Option(
            help="auto (GPU when FAISS sees one), cpu or cuda: where FAISS trains and adds, and "
            "which defaults apply."
        ),
    ] = "auto",
    ray: Annotated[
        str | None,
        typer.Option(help="Populate the shards as Ray tasks: local, auto or a cluster address."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an interrupted build of --out with the same settings and sources "
            "(kept in .OUT.partial beside it); --no-resume starts afresh."
        ),
    ] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="Manifest as JSON on stdout.")
    ] = False,
    show_progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help=PROGRESS_HELP)
    ] = True,
) -> None:
    """Build a sharded index over EMB.npy... into --out (written atomically; an interrupted
    build resumes). Before training, the time it should take here is printed (estimated from
    short probes of this machine); progress shows each training phase."""
    from xretrieve.index import BuildConfig, build_index

    config = BuildConfig(
        factory=factory,
        train_size=train_size,
        seed=seed,
        shard_rows=shard_rows,
        block_rows=block_rows,
        device=device,
        ray=ray,
        resume=resume,
    )
    with progress_bars(show_progress) as progress:
        manifest = build_index(
            embeddings, out, config, progress=progress, on_estimate=_print_estimate
        )
    if json_output:
        print_json(manifest.to_json())
        return
    _print_summary(out, manifest)


@app.command("verify", cls=Command)
@reports_errors
def verify(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Index directory.")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Manifest as JSON on stdout.")
    ] = False,
) -> None:
    """Check DIR's manifest against its shards and source files: hashes, and each shard's FAISS
    type, dimension, metric and rows."""
    from xretrieve.index.verify import verify_index

    check = verify_index(directory)
    manifest = check.manifest
    if json_output:
        print_json(manifest.to_json() | {"verified": check.to_json()})
        return
    _print_summary(directory, manifest)
    stdout.print(
        f"verified: {len(manifest.shards)} shard file(s), {manifest.count} rows, "
        f"{check.shard_bytes} bytes (SHA-256; FAISS type {manifest.factory!r}, dimension, "
        f"metric and rows as manifest.json says); {len(manifest.sources)} source file(s), "
        f"{check.source_bytes} bytes (shape and SHA-256 as recorded)",
        highlight=False,
        soft_wrap=True,
    )


def _print_estimate(estimate) -> None:
    stderr.print(estimate.describe(), highlight=False, soft_wrap=True)


def _print_summary(directory: Path, manifest) -> None:
    rows = [
        ["factory", manifest.factory],
        ["dimension", manifest.dimension],
        ["rows", manifest.count],
        ["shards", len(manifest.shards)],
        ["train size", manifest.train_size],
        ["seed", manifest.seed],
        ["FAISS", manifest.faiss_version],
        ["sources", len(manifest.sources)],
    ]
    if manifest.factory_note:
        rows.append(["note", manifest.factory_note])
    print_table(f"index {directory}", ["field", "value"], rows)
