"""Tiny sentence-transformers model folders, saved by sentence-transformers itself around the tiny
random checkpoints of ``tiny_models``, and their embeddings by sentence-transformers' own
``encode`` (the reference the exporter is compared with)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tiny_models import make_tiny_checkpoint

# Texts of several scripts and lengths (one longer than the folders' max_seq_length of 48), no
# leading or trailing spaces; upper case for the lower-casing folder.
ST_SENTENCES = [
    "The cat sat on the mat.",
    "Der Hund läuft in den Park und spielt mit dem Ball.",
    "le chat est sur la table",
    "Кошка спит на диване.",
    "我们在中国的大城市",
    "a",
    "THE RED HOUSE BY THE RIVER",
    "An unusually long sentence about the city and the river " * 6,
]


def make_st_folder(
    out_dir: Path,
    arch: str = "bert",
    *,
    pooling: str = "mean",
    dense: Sequence[tuple[int, str]] = (),
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    include_prompt: bool = True,
    max_seq_length: int | None = 48,
    do_lower_case: bool = False,
    seed: int = 0,
) -> Path:
    """Save a sentence-transformers model to ``out_dir``: the tiny ``arch`` checkpoint
    ("bert" or "xlm-roberta", 32 wide) as its Transformer, a Pooling of ``pooling``
    (``include_prompt``), a Dense layer per ``(out_features, torch.nn activation name)`` of
    ``dense``, a Normalize when ``normalize``, and the ``prompts``. Returns ``out_dir``."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers import models

    out_dir = Path(out_dir)
    hf_dir = make_tiny_checkpoint(out_dir.with_name(out_dir.name + "-hf"), arch, seed=seed)
    torch.manual_seed(seed + 1)
    transformer = models.Transformer(
        str(hf_dir), max_seq_length=max_seq_length, do_lower_case=do_lower_case
    )
    width = transformer.get_embedding_dimension()
    modules: list[torch.nn.Module] = [
        transformer,
        models.Pooling(width, pooling_mode=pooling, include_prompt=include_prompt),
    ]
    for out_features, activation in dense:
        modules.append(
            models.Dense(width, out_features, activation_function=getattr(torch.nn, activation)())
        )
        width = out_features
    if normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(
        modules=modules,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        device="cpu",
    )
    model.save(str(out_dir))
    shutil.rmtree(hf_dir)
    return out_dir


def make_labse_folder(out_dir: Path, seed: int = 0) -> Path:
    """LaBSE's shape: BERT, CLS pooling, Dense (same width) with tanh, Normalize."""
    return make_st_folder(
        out_dir, "bert", pooling="cls", dense=[(32, "Tanh")], normalize=True, seed=seed
    )


def write_legacy_format(
    folder: Path, *, transformer_subfolder: bool = False, do_lower_case: bool = False
) -> Path:
    """Rewrite ``folder`` (saved by ``make_st_folder``) in the format of the folders on the
    Hugging Face hub, written by sentence-transformers 2 and 3: module types
    ``sentence_transformers.models.X``, ``pooling_mode_*`` flags, ``word_embedding_dimension``,
    ``max_seq_length``/``do_lower_case`` in ``sentence_bert_config.json`` and no Normalize
    config; with ``transformer_subfolder`` the transformer in ``0_Transformer`` (the oldest
    layout)."""
    folder = Path(folder)
    modules = json.loads((folder / "modules.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    settings = {
        "max_seq_length": tokenizer_config["model_max_length"],
        "do_lower_case": do_lower_case,
    }
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        module["type"] = f"sentence_transformers.models.{kind}"
        module_dir = folder / module["path"]
        if kind == "Pooling":
            config = json.loads((module_dir / "config.json").read_text())
            mode = config.pop("pooling_mode")
            legacy = {
                "word_embedding_dimension": config.pop("embedding_dimension"),
                "pooling_mode_cls_token": mode == "cls",
                "pooling_mode_mean_tokens": mode == "mean",
                "pooling_mode_max_tokens": mode == "max",
                "pooling_mode_mean_sqrt_len_tokens": mode == "mean_sqrt_len_tokens",
                "pooling_mode_weightedmean_tokens": mode == "weightedmean",
                "pooling_mode_lasttoken": mode == "lasttoken",
                **config,
            }
            (module_dir / "config.json").write_text(json.dumps(legacy))
        elif kind == "Dense":
            config = json.loads((module_dir / "config.json").read_text())
            for key in ("module_input_name", "module_output_name"):
                config.pop(key)
            (module_dir / "config.json").write_text(json.dumps(config))
        elif kind == "Normalize":
            (module_dir / "config.json").unlink()
    (folder / "sentence_bert_config.json").write_text(json.dumps(settings))
    if transformer_subfolder:
        sub = folder / "0_Transformer"
        sub.mkdir()
        names = ("config.json", "model.safetensors", "sentence_bert_config.json")
        for path in list(folder.iterdir()):
            if path.name in names or path.name.startswith(("tokenizer", "special_tokens")):
                shutil.move(str(path), str(sub / path.name))
        modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    return folder


def st_encode(
    folder: Path,
    texts: Sequence[str] = ST_SENTENCES,
    *,
    prompt_name: str | None = None,
    prompt: str | None = None,
    normalize_embeddings: bool = False,
) -> np.ndarray:
    """``SentenceTransformer(folder).encode(texts)`` on the CPU in float32, ``(n, dim)``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(
        list(texts),
        prompt_name=prompt_name,
        prompt=prompt,
        batch_size=4,
        convert_to_numpy=True,
        normalize_embeddings=normalize_embeddings,
    ).astype(np.float32)


PROMPTS = {"query": "query: ", "passage": "passage: "}

# The folders the tests build (``make_st_folder`` arguments) and the prompt sentence-transformers
# is asked for as xretrieve's reference: the default prompt, else the one named "query"
# (``st_pipeline.choose_prompt``).
ST_CASES: dict[str, dict] = {
    "labse": dict(arch="bert", pooling="cls", dense=[(32, "Tanh")], normalize=True),
    "xlmr-mean": dict(arch="xlm-roberta", pooling="mean"),
    "lasttoken": dict(arch="xlm-roberta", pooling="lasttoken", normalize=True),
    "max-dense": dict(arch="bert", pooling="max", dense=[(24, "GELU"), (16, "Identity")]),
    "weightedmean": dict(arch="bert", pooling="weightedmean", normalize=True),
    "mean-sqrt-lowercase": dict(
        arch="xlm-roberta", pooling="mean_sqrt_len_tokens", do_lower_case=True
    ),
    "prompt-excluded": dict(
        arch="xlm-roberta",
        pooling="mean",
        prompts=PROMPTS,
        default_prompt_name="query",
        include_prompt=False,
        normalize=True,
    ),
    "cls-prompt-excluded": dict(
        arch="bert", pooling="cls", prompts=PROMPTS, include_prompt=False, seed=3
    ),
}
REFERENCE_PROMPT = {"prompt-excluded": "query", "cls-prompt-excluded": "query"}


def spread_dense_layer(folder: Path, texts: Sequence[str]) -> Path:
    """Set the first Dense layer of ``folder`` (saved by ``make_st_folder``, its Dense as wide as
    the pooling) to standardise the pooled vectors of ``texts``: ``(x - mean) / std`` per
    dimension before the activation. A random tiny transformer's CLS vectors are nearly
    parallel (cosines ~0.999); after this they spread like a trained model's, so that margin
    scores differ by more than rounding. Returns ``folder``."""
    from safetensors.torch import load_file, save_file
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    pooled = SentenceTransformer(modules=[model[0], model[1]], device="cpu").encode(
        list(texts), convert_to_numpy=True
    )
    mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-6
    path = folder / "2_Dense" / "model.safetensors"
    tensors = load_file(str(path))
    import torch

    tensors["linear.weight"] = torch.diag(torch.from_numpy(1.0 / std).float()).contiguous()
    tensors["linear.bias"] = torch.from_numpy(-mean / std).float().contiguous()
    save_file(tensors, str(path))
    return folder
