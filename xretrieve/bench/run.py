"""``xretrieve bench``: embedding and kNN + margin throughput in one run (``run_bench``), as JSON
(``report_dict``) and a plot (``plot_report``, matplotlib Agg, written atomically). Nothing here
prints; results are frozen dataclasses."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xretrieve.bench.data import make_knn_data
from xretrieve.bench.embedding import EmbedResult, EmbedSetting, bench_embedding
from xretrieve.bench.knn_margin import KnnMarginResult, bench_knn_margin, knn_methods, speedups
from xretrieve.bench.machine import machine_info
from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.settings import (
    Backend,
    Device,
    Dtype,
    SourceKind,
    parse_backend,
    parse_device,
    parse_dtype,
)

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """``xretrieve bench``: every ``backends`` x ``dtypes`` x ``batch_tokens`` embedding setting
    on ``texts``, then kNN + margin on ``knn_size`` x ``knn_size`` random rows of the model's
    dimension (0 skips it) with FAISS CPU, torch CPU and the GPU methods where a GPU exists."""

    model: str | Path | None
    texts: tuple[str, ...]
    corpus: Path | None = None
    backends: tuple[Backend, ...] = tuple(Backend)
    dtypes: tuple[Dtype, ...] = (Dtype.FP32,)
    batch_tokens: tuple[int, ...] = (16384,)
    device: Device = Device.AUTO
    repeats: int = 1
    knn_size: int = 10000
    k: int = 4
    seed: int = 0
    # Prepended to every text (None: the model's own prefix).
    text_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", tuple(map(parse_backend, self.backends)))
        dtypes = tuple(parse_dtype(dtype, "dtypes") for dtype in self.dtypes)
        object.__setattr__(self, "dtypes", dtypes)
        object.__setattr__(self, "device", parse_device(self.device))


@dataclass(frozen=True)
class BenchReport:
    """Results of a ``BenchConfig``: embedding results (or one error line per failed setting),
    kNN + margin results, and the model's dimension."""

    config: BenchConfig
    machine: dict[str, Any]
    dim: int | None
    embedding: tuple[EmbedResult, ...]
    embedding_errors: tuple[tuple[EmbedSetting, str], ...]
    knn: dict[str, KnnMarginResult]


def run_bench(config: BenchConfig, progress: ProgressCallback | None = None) -> BenchReport:
    """Run every embedding setting of ``config`` (a setting that fails, e.g. a dtype the
    backend cannot run here, is recorded as an error and the others go on), then kNN + margin
    with the FAISS CPU peer first."""
    machine = machine_info()
    embedded: list[EmbedResult] = []
    errors: list[tuple[EmbedSetting, str]] = []
    for backend in config.backends:
        for dtype in config.dtypes:
            for batch_tokens in config.batch_tokens:
                setting = EmbedSetting(backend, dtype, config.device, batch_tokens, config.repeats)
                try:
                    embedded.append(
                        bench_embedding(
                            config.model,
                            setting,
                            config.texts,
                            text_prefix=config.text_prefix,
                            progress=progress,
                        )
                    )
                except XRetrieveError:
                    raise
                except Exception as error:  # one failing setting must not lose the others
                    logger.warning("benchmark %s failed: %s", setting, error)
                    errors.append((setting, f"{type(error).__name__}: {error}"))
    dim = embedded[0].dim if embedded else _model_dim(config.model)
    knn: dict[str, KnnMarginResult] = {}
    if config.knn_size > 0:
        src, tgt = make_knn_data(config.knn_size, config.knn_size, dim, config.seed)
        methods = knn_methods(include_numpy=False)
        knn = bench_knn_margin(
            src, tgt, config.k, methods, repeats=config.repeats, progress=progress
        )
    return BenchReport(config, machine, dim, tuple(embedded), tuple(errors), knn)


def _model_dim(model: str | Path | None) -> int:
    from exporters import read_checkpoint_config
    from xretrieve.encoding.load import resolve_model

    source = resolve_model(model)
    if source.kind is SourceKind.EXPORT:
        from exporters import read_manifest

        return int(read_manifest(source.path).dim)
    return int(read_checkpoint_config(source.path)["hidden_size"])


def _rounded(values: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {
        key: round(value, digits) if isinstance(value, float) else value
        for key, value in values.items()
    }


def embed_result_dict(result: EmbedResult) -> dict[str, Any]:
    """JSON-ready dict of one ``EmbedResult`` (floats rounded, settings as their values)."""
    values = asdict(result)
    values.update(
        backend=result.backend.value, dtype=result.dtype.value, device=result.device.value
    )
    return _rounded(values)


def report_dict(report: BenchReport) -> dict[str, Any]:
    """JSON-ready ``xretrieve bench`` output: keys ``model``, ``machine``, ``workload``,
    ``embedding`` (one dict per setting, with ``speedup_vs_torch_same_dtype`` where a torch
    run of the same dtype and batch_tokens exists), ``embedding_errors``, ``knn``
    (``rows``, ``dim``, ``k``, ``results``: one dict per method with ``speedup_vs_faiss_cpu``)."""
    config = report.config
    embedding = [embed_result_dict(result) for result in report.embedding]
    torch_rates = {
        (r.dtype, r.batch_tokens): r.sentences_per_s
        for r in report.embedding
        if r.backend is Backend.TORCH
    }
    for entry, result in zip(embedding, report.embedding, strict=True):
        rate = torch_rates.get((result.dtype, result.batch_tokens))
        entry["speedup_vs_torch_same_dtype"] = (
            round(result.sentences_per_s / rate, 3) if rate else None
        )
    ratios = speedups(report.knn, "faiss_cpu")
    knn_results = []
    for name, result in report.knn.items():
        entry = _rounded(asdict(result))
        entry["runs"] = [round(run, 4) for run in result.runs]
        entry["speedup_vs_faiss_cpu"] = None if ratios[name] is None else round(ratios[name], 3)
        knn_results.append(entry)
    real = sum(r.real_tokens for r in report.embedding[:1])
    return {
        "model": "default" if config.model is None else str(config.model),
        "machine": report.machine,
        "workload": {
            "sentences": len(config.texts),
            "source": str(config.corpus) if config.corpus else "generated",
            "mean_tokens": round(real / len(config.texts), 2) if real else None,
            "repeats": config.repeats,
        },
        "embedding": embedding,
        "embedding_errors": [
            {
                "backend": s.backend.value,
                "dtype": s.dtype.value,
                "batch_tokens": s.batch_tokens,
                "error": e,
            }
            for s, e in report.embedding_errors
        ],
        "knn": {
            "task": "kNN both ways + ratio margin + max mode",
            "rows": config.knn_size,
            "dim": report.dim,
            "k": config.k,
            "results": knn_results,
        },
    }


def plot_report(report: BenchReport, path: Path) -> None:
    """Bar charts of embedding sentences/s per setting and kNN + margin seconds per method,
    written atomically as a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xretrieve.core.files import atomic_write

    figure, (embed_axes, knn_axes) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r.backend.value} {r.dtype.value}\n{r.batch_tokens}" for r in report.embedding]
    embed_axes.bar(labels, [r.sentences_per_s for r in report.embedding], color="tab:blue")
    embed_axes.set_title(f"embedding ({len(report.config.texts)} sentences)")
    embed_axes.set_ylabel("sentences / s")
    knn_axes.bar(list(report.knn), [r.seconds for r in report.knn.values()], color="tab:orange")
    knn_axes.set_title(f"kNN + margin ({report.config.knn_size} x {report.config.knn_size})")
    knn_axes.set_ylabel("seconds (lower is better)")
    figure.tight_layout()
    try:
        with atomic_write(Path(path), "wb", encoding=None) as handle:
            figure.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(figure)
