"""``xretrieve export``: a Hugging Face encoder checkpoint -> a validated ONNX export directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from xretrieve.cli.common import print_json, print_table, progress_bars, reports_errors
from xretrieve.encoding.layers import parse_layer_indices


def _parse_layers(layer: list[int] | None, layers: str | None) -> tuple[int, ...]:
    return (*(layer or ()), *(parse_layer_indices(layers) or ())) or (-1,)


def _summary_rows(manifest: Any, out: Path) -> list[list[str]]:
    rows = [
        ["export", str(out)],
        ["source", f"{manifest.source_checkpoint} ({manifest.source_hash})"],
        [
            "model",
            f"{manifest.model_type}, {manifest.num_hidden_layers} layers, dim {manifest.dim}",
        ],
        ["layers", ", ".join(str(layer) for layer in manifest.layers)],
        ["pooling", manifest.pooling.value + (", L2-normalised" if manifest.normalize else "")],
        *_pipeline_rows(manifest.sentence_transformers),
        ["dtype / opset", f"{manifest.dtype.value} / {manifest.opset}"],
        ["max length", str(manifest.max_length)],
        ["files", ", ".join(manifest.onnx_files)],
    ]
    choice = manifest.dtype_choice
    if choice:
        rows.append(
            [
                "dtype auto",
                f"{choice['chosen']}: held-out top-1 int8 {choice['int8_accuracy']:.2f} vs "
                f"fp32 {choice['fp32_accuracy']:.2f} (mean of {choice['pairs']} pairs); int8 "
                f"loses most in {choice['worst_language']}: {choice['worst_drop']:.2f} points "
                f"(at most {choice['max_drop']} allowed)",
            ]
        )
    rows += [[f"fused {name}", str(count)] for name, count in manifest.fusion.items() if count]
    figures = manifest.validation
    if figures is not None:
        rows += [
            ["min cosine to torch", f"{figures.min_cosine:.6f}"],
            ["mean cosine to torch", f"{figures.mean_cosine:.6f}"],
            ["max abs diff", f"{figures.max_abs_diff:.3g}"],
            ["validated on", f"{figures.provider}, batches {figures.batch_sizes}"],
        ]
    return rows


def _pipeline_rows(pipeline: Any) -> list[list[str]]:
    """The sentence-transformers pipeline an export carries, as one summary row (none without)."""
    if not pipeline:
        return []
    parts = []
    for kind in pipeline["modules"]:
        if kind == "Pooling":
            excluded = pipeline.get("prompt_tokens", 0)
            kind += f" ({pipeline['pooling']}" + (
                f", the prompt's {excluded} tokens excluded)" if excluded else ")"
            )
        parts.append(kind)
    dense = iter(pipeline["dense"])
    parts = [
        "Dense {in_features}->{out_features} {activation}".format(**next(dense))
        if part == "Dense"
        else part
        for part in parts
    ]
    return [["sentence-transformers", ", ".join(parts)]]


@reports_errors
def export_command(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="Hugging Face checkpoint directory (config.json, model.safetensors, "
            "tokenizer), a sentence-transformers model folder (modules.json: its pooling, Dense "
            "layers and normalisation are exported too), a Hugging Face model id org/name, or "
            "'default' for the default model.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export directory to write.")],
    layer: Annotated[
        list[int] | None,
        typer.Option(
            "--layer",
            help="Hidden layer to pool (0 = embeddings, -1 = last; repeat for several).",
        ),
    ] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", help="Comma-separated layers, e.g. -1,-4,8.")
    ] = None,
    pooling: Annotated[
        str | None,
        typer.Option(
            "--pooling",
            help="mean (masked), cls, max, mean_sqrt_len_tokens, weightedmean or lasttoken "
            "(default: the model's own: a sentence-transformers folder's pooling, else mean).",
        ),
    ] = None,
    no_normalize: Annotated[
        bool, typer.Option("--no-normalize", help="Keep raw vectors (no L2 normalisation).")
    ] = False,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype",
            help="fp16 (for CUDA), fp32 or int8 (for CPU), or auto: fp16 with a GPU, else "
            "int8 if its held-out retrieval accuracy is within 1 point of fp32 in every "
            "language, else fp32.",
        ),
    ] = "fp16",
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (default 17).")] = None,
    no_optimize: Annotated[
        bool,
        typer.Option("--no-optimize", help="Skip ONNX Runtime's fusions (and their check)."),
    ] = False,
    text_prefix: Annotated[
        str | None,
        typer.Option(
            "--text-prefix",
            help="Prepended to every text, e.g. 'query: ' (default: the checkpoint's own, "
            "from its xretrieve.json, the default model's, or a sentence-transformers "
            "folder's default prompt, else its prompt named query).",
        ),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Tokens per text (default: the model's).")
    ] = None,
    projection: Annotated[
        bool,
        typer.Option(
            "--projection",
            help="Attach the checkpoint's trained image-text projection head "
            "(projection.safetensors), so that text lands in the image-feature space.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr (default: on, unless --json).",
        ),
    ] = True,
) -> None:
    """Export a checkpoint to ONNX with pooling inside the graph, optimise it, validate it
    against torch, and write DIR/model.onnx, the tokenizer and DIR/manifest.json."""
    from exporters import DEFAULT_OPSET, ExportConfig, export_checkpoint
    from exporters.onnx_export import EXPORT_OUTPUT
    from xretrieve.core.outputs import check_output_path
    from xretrieve.encoding.load import checkpoint_directory

    config = ExportConfig(
        layers=_parse_layers(layer, layers),
        pooling=pooling,
        normalize=not no_normalize,
        dtype=dtype,
        opset=opset if opset is not None else DEFAULT_OPSET,
        optimize=not no_optimize,
        text_prefix=text_prefix,
        max_length=max_length,
        projection=projection,
    )
    # A bad --out is refused before a model name is resolved (a download, or the default
    # model's first-use conversion); export_checkpoint checks it again against the folder.
    local = [Path(checkpoint).resolve()] if Path(checkpoint).exists() else []
    check_output_path(out, directory=True, inputs=local, owner=EXPORT_OUTPUT)
    with progress_bars(progress and not as_json) as report:
        checkpoint_dir = checkpoint_directory(checkpoint, report)
        manifest = export_checkpoint(checkpoint_dir, out, config, report)
    if as_json:
        print_json(manifest.to_json())
    else:
        print_table("xretrieve export", ["", "value"], _summary_rows(manifest, out))
