"""Embed a plain-text file (one sentence per line) into a ``.npy`` file, streaming: the file is
read in windows of lines and the rows are written into a memory-mapped output, so memory stays
bounded however large the input is."""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.files import default_permissions
from xretrieve.core.outputs import check_output_path
from xretrieve.core.progress import ProgressCallback
from xretrieve.core.settings import Backend, Device, parse_backend, parse_device
from xretrieve.encoding.encoder import EncodeStats, SentenceEncoder

_BLOCK_BYTES = 8 << 20


class OutputDtype(enum.Enum):
    """The element type of a written embeddings file: float32, or float16 at half the size
    (``mine``, ``bucc``, ``tatoeba`` and ``evaluate`` read both)."""

    FP32 = "fp32"
    FP16 = "fp16"

    @property
    def numpy(self) -> type:
        return np.float16 if self is OutputDtype.FP16 else np.float32


@dataclass(frozen=True)
class EmbedFileResult:
    """``shape`` of the written array: ``(n_lines, dim)``, or ``(n_lines, n_layers, dim)``."""

    input_path: Path
    output_path: Path
    shape: tuple[int, ...]
    stats: EncodeStats


@dataclass(frozen=True)
class ModelEmbedResult:
    """What ``embed_model_file`` did: the written file and the encoder that embedded it
    (``model``: the encoder's name; ``layers``: its hidden-state indices)."""

    file: EmbedFileResult
    model: str
    backend: Backend
    dim: int
    layers: tuple[int, ...]
    batch_tokens: int
    out_dtype: OutputDtype

    def to_json(self) -> dict[str, Any]:
        """The summary ``xretrieve embed --json`` prints (rates rounded)."""
        stats = self.file.stats
        return {
            "model": self.model,
            "provider": stats.provider,
            "backend": self.backend.value,
            "input": str(self.file.input_path),
            "output": str(self.file.output_path),
            "shape": list(self.file.shape),
            "dtype": self.out_dtype.value,
            "sentences": stats.sentences,
            "dim": self.dim,
            "layers": list(self.layers),
            "truncated": stats.truncated,
            "max_length": stats.max_length,
            "seconds": round(stats.seconds, 4),
            "sentences_per_s": round(stats.sentences_per_s, 2),
            "tokens_per_s": round(stats.tokens_per_s, 2),
            "padding_efficiency": round(stats.padding_efficiency, 4),
            "batch_tokens": self.batch_tokens,
            "batches": stats.batches,
            "oom_splits": stats.oom_splits,
        }


def count_lines(path: Path) -> int:
    """Lines in a text file (a last line without a newline counts; an empty file has none), after
    checking that it is UTF-8: ``InputError`` names the first line that is not."""
    path = Path(path)
    lines = 0
    carry = b""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None
    with handle:
        while True:
            block = handle.read(_BLOCK_BYTES)
            data = carry + block
            # Decode whole lines only, so that no multi-byte character is split between blocks.
            cut = data.rfind(b"\n") + 1 if block else len(data)
            complete, carry = data[:cut], data[cut:]
            check_utf8(path, complete, first_line=lines + 1)
            lines += complete.count(b"\n")
            if not block:
                return lines + (1 if complete and not complete.endswith(b"\n") else 0)


def check_readable(path: Path) -> None:
    """``InputError`` naming ``path`` when it cannot be opened for reading (missing, a directory,
    no permission): what a command checks before it loads a model."""
    try:
        Path(path).open("rb").close()
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror}") from None


def check_utf8(path: Path, data: bytes, first_line: int) -> None:
    """``InputError`` naming the line and column of the first byte of ``data`` (whole lines of
    ``path`` from line ``first_line``, 1-based) that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        start = data.rfind(b"\n", 0, error.start) + 1
        raise InputError(
            path,
            f"invalid UTF-8 (byte 0x{data[error.start]:02x} at column {error.start - start + 1}); "
            "the input must be UTF-8 text, one sentence per line",
            line=line,
        ) from None


def read_line_windows(
    path: Path, window: int, *, start_byte: int = 0, first_line: int = 0, lines: int | None = None
) -> Iterator[list[str]]:
    """The file's lines, ``window`` at a time, without their line ending (``\\n`` or ``\\r\\n``)
    and without a leading byte-order mark; empty lines are kept (as ""). From ``start_byte``
    (the start of line ``first_line``, 0-based; errors name lines from there), at most ``lines``
    lines (None: to the end)."""
    path = Path(path)
    chunk: list[str] = []
    if lines == 0:
        return
    with path.open("rb") as handle:
        handle.seek(start_byte)
        for number, raw in enumerate(handle, start=first_line + 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                check_utf8(path, raw, first_line=number)
                raise  # unreachable: check_utf8 raised InputError
            if number == 1:
                text = text.removeprefix("\ufeff")
            chunk.append(text.removesuffix("\n").removesuffix("\r"))
            if len(chunk) == window:
                yield chunk
                chunk = []
            if lines is not None and number - first_line == lines:
                break
    if chunk:
        yield chunk


def embed_file(
    encoder: SentenceEncoder,
    input_path: Path,
    output_path: Path,
    *,
    layer_outputs: bool = False,
    out_dtype: OutputDtype = OutputDtype.FP32,
    progress: ProgressCallback | None = None,
) -> EmbedFileResult:
    """Embed every line of ``input_path`` (UTF-8, one sentence per line, empty lines included)
    and write ``out_dtype`` rows in line order to ``output_path`` (``.npy``) atomically:
    ``(n, dim)``, or ``(n, n_layers, dim)`` with ``layer_outputs``. Memory holds about two
    windows of ``encoder.window`` sentences, never the whole input or output. A value beyond
    float16's range is an ``InputError`` (nothing is written), never a silent infinity."""
    input_path = Path(input_path)
    output_path = check_output_path(output_path, option="output_path")
    check_not_input(input_path, output_path)
    n_lines = count_lines(input_path)
    windows = read_line_windows(input_path, encoder.window)
    return write_embeddings(
        encoder,
        windows,
        n_lines,
        input_path,
        output_path,
        layer_outputs=layer_outputs,
        out_dtype=out_dtype,
        progress=progress,
    )


def embed_model_file(
    model: str,
    input_path: Path,
    output_path: Path,
    *,
    backend: Backend | str = Backend.ORT,
    device: Device | str = Device.AUTO,
    batch_tokens: int = 16384,
    dtype: str = "auto",
    layers: Sequence[int] | None = None,
    layer_outputs: bool = False,
    out_dtype: OutputDtype = OutputDtype.FP32,
    progress: ProgressCallback | None = None,
    on_loaded: Callable[[SentenceEncoder], None] | None = None,
    prompt: str | None = None,
) -> ModelEmbedResult:
    """``load_encoder(model, ...)`` then ``embed_file``, with the device, the backend, the input
    and the output checked before the (slow) model load; ``model`` given as a folder counts as
    an input of the output guard (a default or hub model lives in a cache of its own).
    ``on_loaded`` sees the encoder before the first line is embedded; ``prompt`` names one of
    the model's prompts (``load_encoder``)."""
    # Here, not at the top: the CLI imports this module (OutputDtype) for every --help.
    from xretrieve.encoding.load import load_encoder

    device, backend = parse_device(device), parse_backend(backend)
    input_path = Path(input_path)
    check_readable(input_path)
    model_folder = [Path(model)] if Path(model).exists() else []
    check_output_path(output_path, inputs=[input_path, *model_folder])
    encoder = load_encoder(
        model,
        backend=backend,
        device=device,
        batch_tokens=batch_tokens,
        dtype=dtype,
        layers=layers,
        progress=progress,
        prompt=prompt,
    )
    if on_loaded is not None:
        on_loaded(encoder)
    result = embed_file(
        encoder,
        input_path,
        output_path,
        layer_outputs=layer_outputs,
        out_dtype=out_dtype,
        progress=progress,
    )
    return ModelEmbedResult(
        result, encoder.name, backend, encoder.dim, tuple(encoder.layers), batch_tokens, out_dtype
    )


def write_embeddings(
    encoder: SentenceEncoder,
    windows: Iterator[list[str]],
    n_lines: int,
    input_path: Path,
    output_path: Path,
    *,
    first_line: int = 0,
    layer_outputs: bool = False,
    out_dtype: OutputDtype = OutputDtype.FP32,
    progress: ProgressCallback | None = None,
) -> EmbedFileResult:
    """``embed_file``'s write: embed the ``n_lines`` sentences of ``windows`` (lines
    ``first_line ...`` of ``input_path``, which errors name) into ``output_path`` atomically."""
    width = (encoder.backend.n_layers, encoder.dim) if layer_outputs else (encoder.dim,)
    shape = (n_lines, *width)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    dtype = out_dtype.numpy
    item_bytes = np.dtype(dtype).itemsize
    _check_free_space(output_path, item_bytes * int(np.prod(shape)) + _NPY_HEADER_BYTES)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{output_path.name}.", suffix=".tmp", dir=output_path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if n_lines == 0:
            # open_memmap cannot map zero bytes of data.
            with tmp.open("wb") as handle:
                np.save(handle, np.empty(shape, dtype=dtype))
            stats = encoder.encode_stream(
                iter(()), lambda start, rows: None, total=0, progress=progress
            )
        else:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            _reserve_blocks(tmp)

            def sink(start: int, rows: np.ndarray) -> None:
                if dtype is np.float16:
                    _check_fits_fp16(input_path, first_line + start, rows)
                out[start : start + len(rows)] = rows

            stats = encoder.encode_stream(
                windows,
                sink,
                total=n_lines,
                progress=progress,
                layer_outputs=layer_outputs,
            )
            if stats.sentences != n_lines:
                raise InputError(input_path, "the file changed while it was being embedded")
            out.flush()
            del out
        default_permissions(tmp)
        os.replace(tmp, output_path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(
                output_path, f"no space left on the device to write the embeddings ({shape})"
            ) from None
        raise
    return EmbedFileResult(input_path, output_path, shape, stats)


_FP16_MAX = float(np.finfo(np.float16).max)
# np.lib.format pads the header of a .npy file to a multiple of 64 bytes; 4 KiB is ample.
_NPY_HEADER_BYTES = 4096


def _check_fits_fp16(input_path: Path, start: int, rows: np.ndarray) -> None:
    """Refuse rows (the embeddings of lines ``start + 1 ...``) that float16 would turn into
    infinities."""
    peaks = np.abs(rows).reshape(len(rows), -1).max(axis=1, initial=0)
    if (peaks > _FP16_MAX).any():
        raise InputError(
            input_path,
            "embedding values exceed float16's range (65504); write them with {out_dtype='fp32'}",
            line=start + 1 + int(np.argmax(peaks > _FP16_MAX)),
            arguments=("out_dtype",),
        )


def check_not_input(input_path: Path, output_path: Path) -> None:
    """Refuse an output that would replace the input file (``embed X --out X``)."""
    input_path, output_path = Path(input_path), Path(output_path)
    same = output_path.resolve() == input_path.resolve()
    if not same and output_path.exists() and input_path.exists():
        same = os.path.samefile(output_path, input_path)
    if same:
        raise InputError(
            output_path, "is the input file: writing the embeddings there would destroy it"
        )


def _check_free_space(output_path: Path, needed: int) -> None:
    """Refuse to start when the output's file system cannot hold ``needed`` bytes: a memory-mapped
    write into a full disk is a SIGBUS, not an error the process can report."""
    free = shutil.disk_usage(output_path.parent).free
    if free < needed:
        raise InputError(
            output_path,
            f"not enough free space for the embeddings: {needed / 2**20:.1f} MiB needed, "
            f"{free / 2**20:.1f} MiB free",
        )


def _reserve_blocks(path: Path) -> None:
    """Allocate every block of the (sparse) memory-mapped output now, so that the disk filling
    up later raises ENOSPC here instead of SIGBUS on a write through the map."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: the free-space check must do
        return
    with path.open("r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # file system without it
                return
            raise
