"""Where xretrieve keeps derived artefacts (converted default model, exports, embeddings),
and the content hash that keys them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Files that define a checkpoint's weights, architecture and tokenizer; others (README, logs,
# optimizer state) do not change what an export computes.
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt")


def cache_dir() -> Path:
    """``$XRETRIEVE_CACHE``, else ``$XDG_CACHE_HOME/xretrieve``, else ``~/.cache/xretrieve``."""
    explicit = os.environ.get("XRETRIEVE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "xretrieve"


def content_hash(directory: Path, length: int = 16) -> str:
    """sha256 over the relative names and bytes of a checkpoint directory's defining files
    (top level only, sorted), truncated to ``length`` hex digits."""
    digest = hashlib.sha256()
    for file in sorted(Path(directory).iterdir()):
        if not file.is_file() or not file.name.endswith(_HASHED_SUFFIXES):
            continue
        if file.name in {"trainer_state.json", "manifest.json"}:
            continue
        digest.update(file.name.encode())
        digest.update(b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:length]
