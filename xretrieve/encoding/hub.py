"""Hugging Face model ids (``org/name``) -> a local snapshot folder through the hub cache.

``huggingface_hub`` downloads the files a checkpoint needs (config, safetensors weights,
tokenizer; never pickles) into its cache, or, offline (``HF_HUB_OFFLINE=1``, or when the hub is
unreachable), uses the snapshot already cached there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from xretrieve.core.errors import InputError, MissingDependencyError

logger = logging.getLogger(__name__)

# What an encoder checkpoint needs; pickled weights (*.bin, *.pt) and other frameworks' files
# are never fetched.
CHECKPOINT_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "sentencepiece*",
    "spiece*",
)
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(
        os.environ.get(variable, "").strip().lower() in _TRUE
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_snapshot(model_id: str, revision: str | None = None) -> Path:
    """The local snapshot folder of ``model_id`` in the hub cache (``default_model.hf_hub_cache``).

    Online, missing files are downloaded; offline, or when the hub cannot be reached, the cached
    snapshot is used as is. Raises ``InputError`` when it is neither cached nor reachable (or the
    id does not exist)."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "a Hugging Face model id") from None
    from xretrieve.encoding.default_model import hf_hub_cache

    offline = hub_offline()
    cache = hf_hub_cache()
    try:
        folder = huggingface_hub.snapshot_download(
            model_id,
            revision=revision,
            cache_dir=str(cache),
            allow_patterns=list(CHECKPOINT_PATTERNS),
            local_files_only=offline,
        )
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as error:
        reason = type(error).__name__.removesuffix("Error")
        raise InputError(
            None, f"{model_id}: not available from the Hugging Face hub ({reason})"
        ) from None
    except LocalEntryNotFoundError:
        if offline:
            how = "HF_HUB_OFFLINE is set: unset it to download the model once"
        else:
            how = "the Hugging Face hub cannot be reached: download the model once online"
        raise InputError(
            None,
            f"{model_id}: no such local directory, not in the Hugging Face cache {cache}, and "
            f"{how}, or give a local checkpoint directory",
        ) from None
    except (OSError, ValueError) as error:
        raise InputError(
            None, f"{model_id}: cannot fetch from the Hugging Face hub: {error}"
        ) from None
    logger.info("model %s: hub snapshot %s", model_id, folder)
    return Path(folder)
