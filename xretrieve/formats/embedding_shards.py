"""A directory of embedding shards (``xretrieve embed --ray``): ``shard-NNNNN.npy`` files, each the
rows of consecutive input lines, and ``manifest.json`` recording what they were computed from
(model hash, dtype, layers, input size and sha256, lines per shard) and every finished shard
(first line, line count, file, size, sha256). The manifest is rewritten atomically after each
shard, so a killed run leaves a consistent record of what is complete."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.core.files import atomic_write
from xretrieve.core.integrity import file_sha256
from xretrieve.core.outputs import OutputOwner
from xretrieve.core.readers import open_npy, read_json_object

MANIFEST_NAME = "manifest.json"
FORMAT = "xretrieve-embedding-shards"
VERSION = 1


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.npy"


@dataclass(frozen=True)
class ShardEntry:
    """One finished shard: rows of lines ``first_line .. first_line + lines - 1`` (0-based)."""

    number: int
    first_line: int
    lines: int
    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardSettings:
    """What the shards were computed from; a rerun resumes only when these are equal."""

    model: str
    model_hash: str
    backend: str
    compute_dtype: str
    layers: tuple[int, ...] | None
    layer_outputs: bool
    out_dtype: str
    input_path: str
    input_bytes: int
    input_sha256: str
    input_lines: int
    shard_lines: int
    # The model's prompt the shards were embedded with (None: its default; absent from the
    # manifests of earlier versions, which had no other).
    prompt: str | None = None

    def differences(self, other: ShardSettings) -> list[str]:
        """``name: mine -> other's`` for every setting that differs (the paths are not: the same
        model files or input bytes given under another path are the same)."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.name not in ("model", "input_path")
            and getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True)
class ShardsManifest:
    """``dim`` and ``model_layers`` as the encoder reported them; ``shards`` in number order."""

    settings: ShardSettings
    dim: int
    model_layers: tuple[int, ...]
    n_shards: int
    shards: tuple[ShardEntry, ...]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "settings": asdict(self.settings),
            "dim": self.dim,
            "model_layers": list(self.model_layers),
            "n_shards": self.n_shards,
            "shards": [asdict(s) for s in self.shards],
        }

    @property
    def complete(self) -> bool:
        return len(self.shards) == self.n_shards


def is_shards_directory(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``embed --ray``."""
    manifest = Path(path) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        return read_json_object(manifest).get("format") == FORMAT
    except InputError:
        return False


def _is_shards_file(name: str) -> bool:
    """What ``embed --ray`` writes into its directory: shards, the manifest, and the temporary
    files of a write that was killed (``.shard-N.npy.*.tmp``, ``.manifest.json.*.tmp``)."""
    if name == MANIFEST_NAME:
        return True
    if name.startswith("shard-") and name.endswith(".npy"):
        return True
    return name.endswith(".tmp") and name.startswith((".shard-", f".{MANIFEST_NAME}."))


def shards_disowns(directory: Path) -> str | None:
    """None when the non-empty ``directory`` was written by ``embed --ray`` and holds only what
    it writes, else why not. The ``OutputOwner`` of ``embed --ray --out``."""
    if not is_shards_directory(directory):
        return f"no {MANIFEST_NAME} of embedding shards"
    foreign = sorted(
        entry.name
        for entry in Path(directory).iterdir()
        if not (entry.is_file() and _is_shards_file(entry.name))
    )
    if foreign:
        return (
            f"it also holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            "which embedding shards do not include"
        )
    return None


# Named by the embedding on Ray that writes it (``RayEmbedder``; the CLI's ``embed --ray``).
SHARDS_OUTPUT = OutputOwner("embed {ray=True}", shards_disowns, arguments=("ray",))


def remove_shards(directory: Path) -> None:
    """Delete what ``embed --ray`` wrote into ``directory`` (``--overwrite``), nothing else."""
    for entry in Path(directory).iterdir():
        if entry.is_file() and _is_shards_file(entry.name):
            entry.unlink(missing_ok=True)


def read_shards_manifest(directory: Path) -> ShardsManifest | None:
    """The manifest of ``directory``, or None when it has none; ``InputError`` when it is not
    one of ours or is damaged."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    data = read_json_object(path)
    try:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise InputError(path, f"not an embedding-shards manifest ({FORMAT} v{VERSION})")
        settings = dict(data["settings"])
        if settings["layers"] is not None:
            settings["layers"] = tuple(settings["layers"])
        return ShardsManifest(
            settings=ShardSettings(**settings),
            dim=int(data["dim"]),
            model_layers=tuple(data["model_layers"]),
            n_shards=int(data["n_shards"]),
            shards=tuple(ShardEntry(**s) for s in data["shards"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(path, f"damaged embedding-shards manifest: {error}") from None


def write_shards_manifest(directory: Path, manifest: ShardsManifest) -> None:
    """Write ``manifest.json`` atomically (readers see the old one or the new one)."""
    with atomic_write(Path(directory) / MANIFEST_NAME) as handle:
        json.dump(manifest.to_json(), handle, indent=1)
        handle.write("\n")


@dataclass(frozen=True)
class SourceFile:
    """An embedding file to read: given as is (``sha256`` None, not hashed yet), or a shard of
    an ``embed --ray`` directory checked against its manifest (``sha256`` the digest found)."""

    path: Path
    sha256: str | None = None


def verified_shards(directory: Path) -> list[SourceFile]:
    """The shard files of a complete ``embed --ray`` directory, in line order, each checked
    against its manifest entry: numbered 0, 1, ... in order, a plain shard file name in
    ``directory``, lines consecutive from line 0 in shards of the recorded size up to the
    input's line count, and the file holding that many rows of the manifest's dimension with
    the recorded size and SHA-256. ``InputError`` naming the manifest or the shard otherwise
    (or when the run that wrote it has not finished)."""
    directory = Path(directory)
    manifest = read_shards_manifest(directory)
    path = directory / MANIFEST_NAME
    if manifest is None:
        raise InputError(directory, f"no {MANIFEST_NAME}: not a directory of embedding shards")
    if not manifest.complete:
        raise InputError(
            directory,
            f"only {len(manifest.shards)} of {manifest.n_shards} shards are finished: "
            "rerun the embedding that wrote it, with the same arguments, to complete it",
        )
    settings, files, line = manifest.settings, [], 0
    for position, entry in enumerate(manifest.shards):
        _check_entry(path, entry, position, line, settings)
        shard = directory / entry.file
        if not shard.is_file():
            raise InputError(shard, f"shard missing (listed in {path})")
        if shard.stat().st_size != entry.bytes:
            raise InputError(
                shard,
                f"has {shard.stat().st_size} bytes, {MANIFEST_NAME} says {entry.bytes} "
                "(truncated or replaced?)",
            )
        shape = open_npy(shard).shape
        if shape[:1] != (entry.lines,) or shape[-1:] != (manifest.dim,):
            raise InputError(
                shard,
                f"has shape {shape}, {MANIFEST_NAME} says {entry.lines} rows of {manifest.dim}",
            )
        digest = file_sha256(shard)
        if digest != entry.sha256:
            raise InputError(
                shard,
                f"SHA-256 differs from {MANIFEST_NAME}'s record (changed since it was written)",
            )
        files.append(SourceFile(shard, digest))
        line += entry.lines
    if line != settings.input_lines:
        raise InputError(
            path, f"the shards hold {line} lines, the input had {settings.input_lines}"
        )
    return files


def _check_entry(
    path: Path, entry: ShardEntry, position: int, line: int, settings: ShardSettings
) -> None:
    """``entry``, the ``position``-th of the manifest, as embed --ray writes it."""
    for name in ("number", "first_line", "lines", "bytes"):
        value = getattr(entry, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(path, f"shard entry {position}: {name!r} is {value!r}, not a count")
    if entry.number != position:
        raise InputError(
            path,
            f"shard entry {position} is numbered {entry.number}: entries must be numbered "
            "0, 1, ... in order",
        )
    if entry.file != shard_name(entry.number):
        raise InputError(
            path,
            f"shard {entry.number}'s file is {entry.file!r}, expected "
            f"{shard_name(entry.number)!r} in the same directory",
        )
    expected_lines = min(settings.shard_lines, settings.input_lines - line)
    if entry.first_line != line or entry.lines != expected_lines:
        raise InputError(
            path,
            f"shard {entry.number} records lines {entry.first_line}+{entry.lines}, expected "
            f"{line}+{expected_lines} ({settings.shard_lines} lines per shard, "
            f"{settings.input_lines} in all)",
        )


def shard_paths(directory: Path) -> list[Path]:
    """The shard files of a complete shards directory, in line order, checked against its
    manifest (``verified_shards``)."""
    return [source.path for source in verified_shards(directory)]


def expand_shard_directories(paths: list[Path]) -> list[SourceFile]:
    """``paths`` with every ``embed --ray`` directory replaced by its verified shard files, in
    order."""
    return [
        source
        for path in paths
        for source in (
            verified_shards(path) if is_shards_directory(path) else [SourceFile(Path(path))]
        )
    ]
