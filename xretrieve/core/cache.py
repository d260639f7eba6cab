"""Where xretrieve keeps derived artefacts (converted default model, exports, embeddings),
and the content hash that keys them."""

from __future__ import annotations

import hashlib
import json
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
    (top level only, sorted; in a sentence-transformers folder also those of the module folders
    its ``modules.json`` names, such as ``2_Dense``), truncated to ``length`` hex digits."""
    digest = hashlib.sha256()
    directory = Path(directory)
    files = [file for file in sorted(directory.iterdir()) if file.is_file()]
    for folder in _module_folders(directory):
        files += sorted(path for path in folder.rglob("*") if path.is_file())
    for file in files:
        if not file.name.endswith(_HASHED_SUFFIXES):
            continue
        if file.name in {"trainer_state.json", "manifest.json"}:
            continue
        digest.update(file.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:length]


def _module_folders(directory: Path) -> list[Path]:
    """The sub-folders of a sentence-transformers folder's modules (``modules.json``'s paths),
    sorted; none for another folder or an unreadable ``modules.json`` (the exporter refuses it)."""
    try:
        modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(modules, list):
        return []
    paths = {module.get("path") for module in modules if isinstance(module, dict)}
    # Module folders are names inside the folder ("1_Pooling"); anything else is no module's.
    names = [path for path in paths if isinstance(path, str) and Path(path).name == path]
    return sorted(
        directory / name
        for name in names
        if name not in ("", ".", "..") and (directory / name).is_dir()
    )
