"""What ``evaluate`` is asked to do (``EvaluationConfig``) and what it plans per model
(``ModelPlan``): types shared by the runner and the reports, in a module of their own so that
neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xretrieve.core.settings import Backend, Device, parse_backend, parse_device
from xretrieve.encoding.layers import LayerSpec
from xretrieve.evaluation.tasks import ScoringSettings


@dataclass(frozen=True)
class ModelPlan:
    """What will be evaluated for one model argument.

    ``checkpoint_hash`` identifies the weights (``content_hash``, or an export's
    ``source_hash``); ``store_id`` also covers every setting that changes the vectors: for a
    checkpoint (exported on the fly) its pooling, dtype, prefix and backend, for an export its
    whole manifest but where, when and how well it was made (dtype and quantisation, pooling,
    layers, prefix, max length, projection, opset, ...) and the sizes of its ONNX files. It
    keys both the embedding cache and the result rows: two exports of one checkpoint, or an
    export and its checkpoint, are two models (an export is never taken for its checkpoint,
    even with the same settings: its graph is its own). ``encoder_layers`` is passed to the
    encoder factory (None for an export, whose layers are fixed); ``cache_layers`` are the
    layers its output axis holds, and ``layers`` those scored (a subset)."""

    model: str
    name: str
    checkpoint_hash: str
    store_id: str
    layers: tuple[int, ...]
    encoder_layers: tuple[int, ...] | None
    cache_layers: tuple[int, ...]
    # A checkpoint trained with the image-text task: its projected view (the head's layer and
    # cache id), used by tasks that score in the image-feature space.
    projection_layer: int | None = None
    projection_store_id: str | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """Inputs of ``evaluate``. ``layers``: each model's default (the last layer of a checkpoint,
    the first exported layer of an export), every layer (hidden states 1..L, or every exported
    layer), or hidden-state indices (-1 = last). ``langs``: None for every language
    found under ``data_dir``. ``backend`` and ``device`` (the encoder's) take members or their
    values; unknown values raise ``ArgumentError``."""

    models: tuple[str, ...]
    data_dir: Path
    out_dir: Path
    tasks: tuple[str, ...] = ("bucc", "tatoeba")
    langs: tuple[str, ...] | None = None
    baseline: str | None = None
    layers: LayerSpec = field(default_factory=LayerSpec)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    backend: Backend = Backend.ORT
    device: Device = Device.AUTO
    batch_tokens: int = 16384
    cache_root: Path | None = None
    resource_groups: dict[str, str] | None = None
    plots: bool = True
    # Prepended to every text of a checkpoint (None: each checkpoint's own prefix).
    text_prefix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_backend(self.backend))
        object.__setattr__(self, "device", parse_device(self.device))
