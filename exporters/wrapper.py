"""A Hugging Face encoder checkpoint as one sentence-embedding module: load it safely, pick hidden
layers, pool inside the model so that only ``[batch, dim]`` vectors leave it.

Shared by the ONNX exporter and the engine's torch backend, so that both compute the same thing.
This module imports torch; ``import exporters`` does not (its names load lazily).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from exporters.checkpoint import (
    LAYER_LISTS,
    PROJECTION_WEIGHTS,
    SUPPORTED_MODEL_TYPES,
    check_loaded_weights,
    check_weights,
    read_checkpoint_config,
    read_projection_info,
)
from exporters.config import resolve_layers
from exporters.st_pipeline import (
    DENSE_WEIGHTS,
    SentencePipeline,
    check_pipeline_settings,
    read_sentence_pipeline,
    transformer_directory,
)
from xretrieve.core.errors import InputError
from xretrieve.core.settings import Pooling, parse_pooling

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "PooledEncoder",
    "Pooling",
    "load_checkpoint",
    "load_dense_layers",
    "load_projection",
    "pool_hidden_states",
    "resolve_layers",
    "sentence_encoder",
]

logger = logging.getLogger(__name__)

# Architectures without a pooler head (and without the add_pooling_layer argument).
_NO_POOLER_TYPES = {"distilbert"}


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Without transformers' load report (it lists the unused pooler's weights as unexpected or
    missing) and weight-loading bar on stderr; errors still raise. Restores both settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_projection(
    checkpoint_dir: Path | str, hidden_size: int
) -> tuple[torch.nn.Linear, dict[str, Any]]:
    """The checkpoint's image-text projection head as an ``nn.Linear(in_dim, out_dim)`` in eval
    mode, with its ``projection.json`` info; ``InputError`` when missing or inconsistent."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_projection_info(Path(checkpoint_dir), hidden_size)
    path = Path(checkpoint_dir) / PROJECTION_WEIGHTS
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise InputError(path, f"cannot read the projection weights: {error}") from None
    shapes = {"weight": (info["out_dim"], info["in_dim"]), "bias": (info["out_dim"],)}
    for name, shape in shapes.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            found = tuple(tensors[name].shape) if name in tensors else "nothing"
            raise InputError(path, f"expected {name!r} of shape {shape}, found {found}")
    layer = torch.nn.Linear(info["in_dim"], info["out_dim"])
    layer.load_state_dict({name: tensors[name].float() for name in shapes})
    return layer.eval(), info


def load_checkpoint(
    checkpoint_dir: Path | str, *, attn_implementation: str | None = "eager"
) -> tuple[torch.nn.Module, Any]:
    """Load a Hugging Face encoder checkpoint as ``(model, config)``: ``AutoModel`` in eval mode,
    float32 weights from safetensors only, ``trust_remote_code=False``, local files only.

    ``attn_implementation`` goes to transformers ("eager", "sdpa", or None for its default).
    "eager" is the default because its graph is the one ONNX Runtime's transformer optimizer
    fuses into its Attention operator; "sdpa" is faster for inference in torch itself.
    Raises ``InputError`` for a missing directory, config.json or weights, pickle-only
    weights, weights that do not match the architecture (missing or unexpected tensors), remote
    code (``auto_map``), or an unsupported ``model_type``. Of a sentence-transformers folder it
    loads the transformer alone (``sentence_encoder`` adds the rest of the pipeline)."""
    from transformers import AutoModel

    config = read_checkpoint_config(checkpoint_dir)
    # A sentence-transformers folder's transformer may sit in a folder of its own.
    checkpoint_dir = transformer_directory(checkpoint_dir)
    check_weights(checkpoint_dir)
    # Sentence embeddings never use the pooler head; not building it also keeps transformers
    # from reporting its weights as missing for checkpoints saved without one.
    extra = {} if config.get("model_type") in _NO_POOLER_TYPES else {"add_pooling_layer": False}
    try:
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(
                checkpoint_dir,
                trust_remote_code=False,
                use_safetensors=True,
                local_files_only=True,
                dtype=torch.float32,
                attn_implementation=attn_implementation,
                output_loading_info=True,
                **extra,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise InputError(checkpoint_dir, f"cannot load the checkpoint: {error}") from error
    check_loaded_weights(checkpoint_dir, info["missing_keys"], info["unexpected_keys"])
    model.eval()
    return model, model.config


def _truncated(model: torch.nn.Module, keep: int) -> torch.nn.Module:
    """A view of ``model`` that runs only its first ``keep`` transformer layers and no pooler head.

    Shares every parameter with ``model`` and leaves ``model`` unchanged: only the module
    containers on the path to the layer list are copied."""
    path = LAYER_LISTS[model.config.model_type]
    view = copy.copy(model)
    view._modules = dict(model._modules)
    if "pooler" in view._modules:
        # The pooler (dense + tanh on the first token) is a pre-training head, never used here.
        view._modules["pooler"] = None
    parent = view
    for name in path[:-1]:
        child = copy.copy(parent._modules[name])
        child._modules = dict(child._modules)
        parent._modules[name] = child
        parent = child
    parent._modules[path[-1]] = torch.nn.ModuleList(list(parent._modules[path[-1]])[:keep])
    return view


def pool_hidden_states(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pooling: Pooling,
    prompt_tokens: int = 0,
) -> torch.Tensor:
    """``[batch, seq, dim]`` token vectors -> ``[batch, dim]`` float32, over the tokens
    ``attention_mask`` keeps (rows right-padded, as xretrieve's tokenizers pad them) after the
    first ``prompt_tokens`` (a prompt excluded from pooling; 0 keeps every token).

    MEAN: masked mean; CLS: the first kept token (token 0 when none is kept); MAX: elementwise
    maximum; MEAN_SQRT_LEN: the sum over the square root of the count; WEIGHTED_MEAN: mean with
    weights 1, 2, ... by position; LAST_TOKEN: the last kept token. Each as sentence-transformers'
    ``Pooling`` computes it; a row with no kept token gives zeros, not NaN."""
    hidden = hidden.float()
    if pooling is Pooling.CLS and not prompt_tokens:
        return hidden[:, 0]
    if pooling is Pooling.MEAN and not prompt_tokens:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        counts = mask.sum(dim=1).clamp(min=1.0)
        return (hidden * mask).sum(dim=1) / counts
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    kept = attention_mask * (positions >= prompt_tokens).to(attention_mask.dtype)
    if pooling is Pooling.CLS:
        first = torch.where(lengths > prompt_tokens, prompt_tokens, 0)
        return _token_at(hidden, first)
    if pooling is Pooling.LAST_TOKEN:
        last = (lengths - 1).clamp(min=0)
        return _token_at(hidden * kept.unsqueeze(-1).to(hidden.dtype), last)
    mask = kept.unsqueeze(-1).to(hidden.dtype)
    if pooling is Pooling.MAX:
        filled = hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1)
        return torch.where(mask.sum(dim=1) > 0, filled, torch.zeros_like(filled))
    if pooling is Pooling.WEIGHTED_MEAN:
        weights = (positions + 1).unsqueeze(-1).to(hidden.dtype) * mask
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    sums, counts = (hidden * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
    if pooling is Pooling.MEAN_SQRT_LEN:
        return sums / counts.sqrt()
    return sums / counts


def _token_at(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``hidden[row, index[row]]`` for each row: ``[batch, seq, dim]``, ``[batch]`` -> ``[batch, dim]``.

    A one-hot sum rather than a gather: the traced graph keeps the output's width fixed (a
    gather's index shape would make it symbolic), and the sum of one vector and zeros is exact."""
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    one_hot = (positions == index.unsqueeze(1)).unsqueeze(-1).to(hidden.dtype)
    return (hidden * one_hot).sum(dim=1)


class _PoolNormalize(torch.nn.Module):
    """Pooling, optional projection and L2 normalisation of one layer's hidden states.

    A module of its own so that its ONNX nodes carry a recognisable name scope: the fp16
    conversion keeps them in float32 (sums over hundreds of tokens, and norms, are where
    half precision loses most)."""

    def __init__(
        self,
        pooling: Pooling,
        normalize: bool,
        projection: torch.nn.Module | None,
        prompt_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.normalize = normalize
        self.projection = projection
        self.prompt_tokens = prompt_tokens

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = pool_hidden_states(hidden, attention_mask, self.pooling, self.prompt_tokens)
        if self.projection is not None:
            # In the model's own dtype, so that a half-precision model's head takes its input.
            pooled = self.projection(pooled.to(hidden.dtype)).float()
        if self.normalize:
            # eps keeps an all-zero row at zero instead of dividing by zero.
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1, eps=1e-12)
        return pooled


class PooledEncoder(torch.nn.Module):
    """Sentence embeddings from chosen hidden layers of an encoder.

    ``forward(input_ids, attention_mask)`` with int64 ``[batch, seq]`` tensors returns
    ``embeddings`` float32 ``[batch, dim]`` for ``layers[0]``, or, when several layers are listed,
    ``(embeddings, layer_embeddings)`` with ``layer_embeddings`` float32 ``[batch, len(layers),
    dim]`` in the listed order. Each layer's hidden states (transformers' ``hidden_states[l]``:
    0 = the embeddings' output, L = the last layer) are pooled (``pool_hidden_states``, without
    the first ``prompt_tokens`` tokens), passed through ``projection`` when given (a trained
    ``nn.Linear`` head, or a sentence-transformers folder's Dense layers), then L2-normalised
    when ``normalize``. Layers after the deepest listed one are not run.
    ``layers`` may count from the end (-1 = last); ``XRetrieveError`` when out of range.

    ``model`` is shared, not copied, and not modified."""

    def __init__(
        self,
        model: torch.nn.Module,
        layers: tuple[int, ...],
        pooling: Pooling | str,
        normalize: bool,
        projection: torch.nn.Module | None = None,
        prompt_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.layers = resolve_layers(tuple(layers), model.config.num_hidden_layers)
        self.pooling = parse_pooling(pooling)
        self.normalize = normalize
        self.prompt_tokens = prompt_tokens
        self.config = model.config
        self.encoder = _truncated(model, max(self.layers))
        self.head = _PoolNormalize(self.pooling, normalize, projection, prompt_tokens)
        linears = [
            module
            for module in (projection.modules() if projection is not None else ())
            if isinstance(module, torch.nn.Linear)
        ]
        self.dim = linears[-1].out_features if linears else model.config.hidden_size

    @property
    def projection(self) -> torch.nn.Module | None:
        return self.head.projection

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outputs = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        # With no transformer layer to run (only layer 0 asked for), transformers records no
        # hidden states; the output is then the embeddings' output itself.
        hidden_states = outputs.hidden_states or (outputs.last_hidden_state,)
        pooled = [self.head(hidden_states[layer], attention_mask) for layer in self.layers]
        if len(pooled) == 1:
            return pooled[0]
        return pooled[0], torch.stack(pooled, dim=1)


def load_dense_layers(folder: Path | str, pipeline: SentencePipeline) -> torch.nn.Sequential | None:
    """A sentence-transformers pipeline's Dense layers as one ``nn.Sequential`` of ``nn.Linear``
    and activation modules in eval mode, float32 (None when it has none). Weights from each
    module's ``model.safetensors`` only (a pickled ``pytorch_model.bin`` is refused unread);
    ``InputError`` naming the file for missing, unexpected or misshapen tensors."""
    if not pipeline.dense:
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from exporters.checkpoint import check_safetensors

    layers: list[torch.nn.Module] = []
    for dense in pipeline.dense:
        path = Path(folder) / dense.path / DENSE_WEIGHTS
        if not path.is_file():
            pickled = path.with_name("pytorch_model.bin").is_file()
            raise InputError(
                path.parent,
                f"no {DENSE_WEIGHTS}"
                + (
                    " (only pytorch_model.bin, a pickle, which can run code when loaded): "
                    "convert it on a machine you trust (safetensors.torch.save_file("
                    "torch.load(bin_path, weights_only=True), safetensors_path))"
                    if pickled
                    else ""
                ),
            )
        check_safetensors(path)
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise InputError(path, f"cannot read the Dense weights: {error}") from None
        shapes = {"linear.weight": (dense.out_features, dense.in_features)}
        if dense.bias:
            shapes["linear.bias"] = (dense.out_features,)
        unexpected = sorted(set(tensors) - set(shapes))
        if unexpected:
            raise InputError(path, f"unexpected tensors {', '.join(unexpected)}")
        for name, shape in shapes.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                found = tuple(tensors[name].shape) if name in tensors else "nothing"
                raise InputError(path, f"expected {name!r} of shape {shape}, found {found}")
        linear = torch.nn.Linear(dense.in_features, dense.out_features, bias=dense.bias)
        linear.load_state_dict({name[len("linear.") :]: tensors[name].float() for name in shapes})
        layers += [linear, getattr(torch.nn, dense.activation)()]
    return torch.nn.Sequential(*layers).eval()


def sentence_encoder(
    checkpoint_dir: Path | str,
    *,
    layers: tuple[int, ...] = (-1,),
    pooling: Pooling | str | None = None,
    normalize: bool = True,
    projection: bool = False,
    prompt_tokens: int = 0,
    attn_implementation: str | None = "eager",
) -> PooledEncoder:
    """The ``PooledEncoder`` of a checkpoint folder, what an export of it computes and what the
    torch backend and the export's validation run: the transformer (``load_checkpoint``), then
    ``pooling`` (None: the folder's sentence-transformers pipeline's, else MEAN), the trained
    image-text head with ``projection`` or the pipeline's Dense layers, and L2 normalisation
    with ``normalize``. ``prompt_tokens``: leading tokens excluded from pooling (a prompt, for a
    pipeline whose Pooling has ``include_prompt=False``). Raises ``InputError`` for a bad folder
    and ``XRetrieveError`` for settings that contradict its pipeline
    (``st_pipeline.check_pipeline_settings``)."""
    checkpoint_dir = Path(checkpoint_dir)
    pipeline = read_sentence_pipeline(checkpoint_dir)
    requested = parse_pooling(pooling) if pooling is not None else None
    model, config = load_checkpoint(checkpoint_dir, attn_implementation=attn_implementation)
    resolved = resolve_layers(tuple(layers), config.num_hidden_layers)
    if pipeline is None:
        head = load_projection(checkpoint_dir, config.hidden_size)[0] if projection else None
        chosen = requested or Pooling.MEAN
    else:
        chosen = check_pipeline_settings(
            pipeline,
            pooling=requested,
            normalize=normalize,
            layers=resolved,
            num_layers=config.num_hidden_layers,
            projection=projection,
        )
        head = load_dense_layers(checkpoint_dir, pipeline)
    return PooledEncoder(
        model, resolved, chosen, normalize, projection=head, prompt_tokens=prompt_tokens
    )
